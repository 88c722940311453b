"""Benchmark chain and tree topologies over a real MQTT broker.

Run from the repository root with the dev venv (matplotlib and psutil come
with the ``bench`` extra):

    python benchmarks/topology.py [--quick] [--providers 4,8,16,32,64] [--sizes 100,10000]

This is ``gradchain bench`` under another name: both accept the same
options. See docs/benchmarks.md for what it measures and a committed run.
"""

from __future__ import annotations

import shlex
import sys

from gradchain.bench.grid import main

if __name__ == "__main__":
    command = "python benchmarks/topology.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    sys.exit(main(sys.argv[1:], command))
