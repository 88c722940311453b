"""The benchmark's learner process: ``gradchain learner`` with a pause before each round.

Run as ``python -m gradchain.bench.learner_host TOPOLOGY --broker URL
--results DIR --events DIR [--paced]``. With ``--paced`` the learner writes
``ready ROUND`` on standard output before it publishes each RoundStart and
waits for a line on standard input. The benchmark answers once the node
processes are idle, so the work that follows a round (refilling obfuscator
pools) does not run into the next round's measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from ..node.broker import parse_broker_url
from ..node.common import run_event_loop
from ..node.learner import LearnerDaemon
from ..topology import load_topology

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


async def wait_for_go(round: int) -> None:
    """Announce ``round`` on standard output and wait for the benchmark's line on standard input."""
    print(f"ready {round}", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise EOFError("the benchmark closed the learner's standard input")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gradchain.bench.learner_host", description=__doc__
    )
    parser.add_argument("topology", type=Path, help="topology file (TOML)")
    parser.add_argument(
        "--broker", required=True, metavar="URL", help="MQTT broker as mqtt://HOST[:PORT]"
    )
    parser.add_argument(
        "--results", type=Path, required=True, metavar="DIR", help="folder for metrics.json"
    )
    parser.add_argument(
        "--events", type=Path, required=True, metavar="DIR", help="folder for the event files"
    )
    parser.add_argument("--log-file", type=Path, required=True, help="file for the learner's log")
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for every node to come online (default: 600)",
    )
    parser.add_argument(
        "--paced", action="store_true", help="wait for a line on standard input before each round"
    )
    args = parser.parse_args(argv)

    handler = logging.FileHandler(args.log_file)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("gradchain").setLevel(logging.INFO)

    topology = load_topology(args.topology)
    daemon = LearnerDaemon(
        topology,
        parse_broker_url(args.broker),
        results=args.results,
        startup_timeout=args.startup_timeout,
        events_dir=args.events,
        before_round=wait_for_go if args.paced else None,
    )
    result = run_event_loop(daemon.run())
    return 0 if result.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
