"""Options of ``gradchain bench`` and ``benchmarks/topology.py``, which parse the same arguments.

This module imports nothing heavy, because the ``gradchain`` command line
builds its parser from it on every start.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ..errors import ConfigError

DEFAULT_PROVIDERS = (4, 8, 16, 32, 64)
DEFAULT_SIZES = (100, 10_000)
DEFAULT_TOPOLOGIES = ("chain", "tree-2", "tree-4", "tree-8", "multi-2")
MODES = ("encrypted", "plaintext")
#: Default of --max-obfuscators: about 11 CPU seconds of pool refills per round
#: with a 2048-bit key, which keeps the default grid near 15 minutes on 2 cores.
DEFAULT_MAX_OBFUSCATORS = 2400
#: Provider counts the cost model predicts for, beyond the measured ones.
PREDICT_FOR = (1000,)


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    providers: tuple[int, ...]
    sizes: tuple[int, ...]
    topologies: tuple[str, ...]
    modes: tuple[str, ...]
    rounds: int
    warmup: int
    key_bits: int
    hosts: int
    broker_url: str | None
    embedded: bool
    link_latency: float | None
    link_bandwidth_mbps: float | None
    max_obfuscators: int
    out: Path
    work: Path | None
    command: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser``."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run, under a minute on 2 cores: N = 4, 8; 100 floats; chain and tree-2; 3 measured rounds",
    )
    parser.add_argument(
        "--providers", metavar="N,N,...", help="provider counts (default: 4,8,16,32,64)"
    )
    parser.add_argument(
        "--sizes", metavar="D,D,...", help="gradient lengths in floats (default: 100,10000)"
    )
    parser.add_argument(
        "--topologies",
        metavar="T,T,...",
        help="chain, tree-F for fan-out F, and multi-M for providers that split their "
        "contribution into M portions over M aggregators (default: chain,tree-2,tree-4,tree-8,multi-2)",
    )
    parser.add_argument(
        "--modes",
        metavar="M,M,...",
        help="encrypted and/or plaintext, the benchmark-only unencrypted reference (default: both)",
    )
    parser.add_argument(
        "--rounds", type=int, help="measured rounds per configuration (default: 5; quick: 3)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="rounds run before the measured ones, which fill the obfuscator pools (default: 1)",
    )
    parser.add_argument(
        "--key-bits", type=int, default=2048, help="Paillier modulus size in bits (default: 2048)"
    )
    parser.add_argument(
        "--hosts",
        type=int,
        default=os.cpu_count() or 1,
        help="processes that host the nodes, each node with its own MQTT connection; "
        "0 runs one process per node (default: one per core)",
    )
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="use this MQTT broker (mqtt://HOST[:PORT]) instead of starting mosquitto",
    )
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="start the embedded amqtt broker even when mosquitto is installed",
    )
    parser.add_argument(
        "--link-latency",
        type=float,
        metavar="SECONDS",
        help="emulated latency added to every message a node publishes",
    )
    parser.add_argument(
        "--link-bandwidth",
        type=float,
        metavar="MBIT_PER_S",
        help="emulated bandwidth of every node's link to the broker, in Mbit/s",
    )
    parser.add_argument(
        "--max-obfuscators",
        type=int,
        default=DEFAULT_MAX_OBFUSCATORS,
        metavar="COUNT",
        help="skip encrypted configurations whose providers need more obfuscators per round "
        "together than this; each costs a node about 4.5 ms of CPU with a 2048-bit key, "
        f"and all nodes share this machine's cores; 0 runs everything (default: "
        f"{DEFAULT_MAX_OBFUSCATORS})",
    )
    parser.add_argument(
        "--work",
        type=Path,
        metavar="DIR",
        help="keep each job's topology, data, events and logs in DIR (default: a temporary "
        "folder, removed at the end)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="results folder (default: benchmarks/results/topology-DATE, -quick with --quick)",
    )


def options_from(args: argparse.Namespace, command: str) -> BenchOptions:
    """Build the options from parsed arguments; raise ConfigError for invalid values."""
    quick = bool(args.quick)
    providers = (
        _ints(args.providers) if args.providers else ((4, 8) if quick else DEFAULT_PROVIDERS)
    )
    sizes = _ints(args.sizes) if args.sizes else ((100,) if quick else DEFAULT_SIZES)
    topologies = (
        _names(args.topologies)
        if args.topologies
        else (("chain", "tree-2") if quick else DEFAULT_TOPOLOGIES)
    )
    modes = _names(args.modes) if args.modes else MODES
    rounds = args.rounds if args.rounds is not None else (3 if quick else 5)
    for topology in topologies:
        parse_topology(topology)
    for mode in modes:
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r} in --modes (use: {', '.join(MODES)})")
    if min(providers) < 1 or min(sizes) < 2 or rounds < 1 or args.warmup < 0 or args.hosts < 0:
        raise ConfigError(
            "--providers must be >= 1, --sizes >= 2, --rounds >= 1, --warmup and --hosts >= 0"
        )
    for name, value in (
        ("--link-latency", args.link_latency),
        ("--link-bandwidth", args.link_bandwidth),
    ):
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be greater than 0, got {value}")
    suffix = "-quick" if quick else ""
    out = args.out or Path("benchmarks/results") / f"topology-{date.today().isoformat()}{suffix}"
    return BenchOptions(
        providers=providers,
        sizes=sizes,
        topologies=topologies,
        modes=modes,
        rounds=rounds,
        warmup=args.warmup,
        key_bits=args.key_bits,
        hosts=args.hosts,
        broker_url=args.broker,
        embedded=args.embedded,
        link_latency=args.link_latency,
        link_bandwidth_mbps=args.link_bandwidth,
        max_obfuscators=args.max_obfuscators,
        out=out,
        work=args.work,
        command=command,
    )


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"invalid list of integers {text!r}: expected e.g. 4,8,16") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_topology(name: str) -> tuple[str, int | None]:
    if name == "chain":
        return "chain", None
    kind, _, number = name.partition("-")
    if kind in ("tree", "multi") and number.isdigit() and int(number) >= 2:
        return kind, int(number)
    raise ConfigError(
        f"unknown topology {name!r} (use chain, tree-F with a fan-out F >= 2 such as tree-4, "
        "or multi-M with M >= 2 portions such as multi-2)"
    )
