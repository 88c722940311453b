"""The ``gradchain`` command line.

    gradchain run TOPOLOGY              the whole job on this machine
    gradchain node --id ID TOPOLOGY     one provider or aggregator
    gradchain learner TOPOLOGY          the learner
    gradchain topology chain|tree       write a topology and split a dataset

Only this module configures logging handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import GradchainError
from .node.common import run_event_loop

logger = logging.getLogger("gradchain")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _configure_logging(level: str, log_file: str | None) -> None:
    handler: logging.Handler
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("gradchain").setLevel(level)


def _add_logging_options(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--log-level",
        default=default,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help=f"level of gradchain's own log records (default: {default})",
    )
    parser.add_argument("--log-file", help="write the log to this file instead of standard error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradchain",
        description="Train a model on data that stays on its devices: encrypted, randomised "
        "gradients summed along a chain or up a tree of nodes over MQTT.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a whole job on this machine, one process per node")
    run.add_argument("topology", type=Path, help="topology file (TOML)")
    run.add_argument(
        "--broker",
        metavar="URL",
        help="MQTT broker as mqtt://HOST[:PORT]; default: an embedded broker on a free loopback port",
    )
    run.add_argument("--results", type=Path, metavar="DIR", help="folder for metrics.json, the model and logs "
                     "(default: results/JOB_ID)")
    run.add_argument("--quiet", action="store_true", help="print only the final summary")
    _add_logging_options(run, "INFO")

    node = commands.add_parser("node", help="run one provider or aggregator node")
    node.add_argument("--id", required=True, dest="node_id", help="this node's id in the topology")
    node.add_argument("topology", type=Path, help="topology file (TOML)")
    node.add_argument("--broker", required=True, metavar="URL", help="MQTT broker as mqtt://HOST[:PORT]")
    _add_logging_options(node, "INFO")

    learner = commands.add_parser("learner", help="run the learner, which holds the private key")
    learner.add_argument("topology", type=Path, help="topology file (TOML)")
    learner.add_argument("--broker", required=True, metavar="URL", help="MQTT broker as mqtt://HOST[:PORT]")
    learner.add_argument("--results", type=Path, metavar="DIR", help="folder for metrics.json and model.json "
                         "(default: results/JOB_ID)")
    learner.add_argument(
        "--startup-timeout", type=float, default=120.0, metavar="SECONDS",
        help="how long to wait for every node to come online (default: 120)",
    )
    learner.add_argument("--quiet", action="store_true", help="do not print a line per round")
    _add_logging_options(learner, "INFO")

    topology = commands.add_parser("topology", help="write a topology file and split a dataset across providers")
    shapes = topology.add_subparsers(dest="shape", required=True, metavar="SHAPE")
    for shape, text in (("chain", "p1 -> p2 -> ... -> learner"), ("tree", "providers -> aggregators -> learner")):
        sub = shapes.add_parser(shape, help=text)
        sub.add_argument("--providers", type=int, required=True, metavar="N", help="number of data providers")
        if shape == "tree":
            sub.add_argument("--fanout", type=int, default=4, metavar="F",
                             help="inputs per aggregator (default: 4)")
        sub.add_argument("--dataset", default="breast-cancer", help="built-in dataset to split (default: breast-cancer)")
        sub.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write into")
        sub.add_argument("--job-id", help="job id (default: DATASET-SHAPE)")
        sub.add_argument("--rounds", type=int, help="maximum rounds")
        sub.add_argument("--learning-rate", type=float, help="initial step size eta_0")
        sub.add_argument("--key-bits", type=int, help="Paillier modulus size in bits (default 2048)")
        sub.add_argument("--min-contributors", type=int, help="smallest total the learner decrypts")
        sub.add_argument("--no-randomise", action="store_true",
                         help="set a_i = 1, for an exact comparison with plaintext gradient descent")
        sub.add_argument("--seed", type=int, default=0, help="seed of the data split (default: 0)")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing topology in DIR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `run` passes --log-level on to the node processes, whose logs go to files;
    # its own console shows the rounds and warnings only.
    level = "WARNING" if args.command in ("run", "topology") else args.log_level
    _configure_logging(level, getattr(args, "log_file", None))
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "node":
            return _node(args)
        if args.command == "learner":
            return _learner(args)
        if args.command == "topology":
            return _topology(args)
    except GradchainError as error:
        print(f"gradchain {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gradchain {args.command}: interrupted", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")


def _load(path: Path):  # type: ignore[no-untyped-def]
    from .topology import load_topology

    return load_topology(path)


def _results_folder(args: argparse.Namespace, job_id: str) -> Path:
    return args.results if args.results is not None else Path("results") / job_id


def _print_round(record, max_rounds: int) -> None:  # type: ignore[no-untyped-def]
    loss = "-" if record.loss is None else f"{record.loss:.4f}"
    accuracy = "-" if record.accuracy is None else f"{record.accuracy:.4f}"
    print(
        f"round {record.iteration:>4}/{max_rounds}  loss {loss}  accuracy {accuracy}  "
        f"contributors {len(record.contributors)}  {record.seconds:.2f} s",
        flush=True,
    )


def _run(args: argparse.Namespace) -> int:
    from .node.launcher import run_job

    topology = _load(args.topology)
    results = _results_folder(args, topology.job.id)
    shape = f"{len(topology.providers)} providers, {len(topology.nodes)} nodes, {topology.hops()} hops"
    print(f"job {topology.job.id}: {shape}, {topology.crypto.key_bits}-bit key", flush=True)
    metrics = run_event_loop(
        run_job(topology, broker_url=args.broker, results=results, log_level=args.log_level, quiet=args.quiet)
    )
    _print_summary(metrics, results)
    return 0 if metrics.get("succeeded") else 1


def _print_summary(metrics: dict, results: Path) -> None:  # type: ignore[type-arg]
    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    print(f"finished after {metrics['rounds']} rounds in {metrics['seconds']:.1f} s: {metrics['reason']}")
    print(f"  encrypted:  accuracy {percent(metrics['accuracy'])}  loss {metrics['loss']}")
    print(f"  plaintext:  accuracy {percent(metrics.get('baseline_accuracy'))}  loss {metrics.get('baseline_loss')}"
          f"  (gradient descent on the pooled data, same settings)")
    if metrics["accuracy"] is not None and metrics.get("baseline_accuracy") is not None:
        gap = 100 * (metrics["accuracy"] - metrics["baseline_accuracy"])
        print(f"  difference: {gap:+.2f} percentage points")
    theta = metrics.get("theta") or []
    if 0 < len(theta) <= 8:
        print("  theta:      [" + ", ".join(f"{value:.4f}" for value in theta) + "]")
    print(f"  metrics:    {results / 'metrics.json'}")


def _node(args: argparse.Namespace) -> int:
    from .node.broker import parse_broker_url
    from .node.daemon import NodeDaemon

    topology = _load(args.topology)
    if args.node_id not in topology.nodes:
        known = ", ".join(topology.nodes)
        print(f"gradchain node: error: no node {args.node_id!r} in {args.topology} (known: {known})", file=sys.stderr)
        return 2
    daemon = NodeDaemon(topology, args.node_id, parse_broker_url(args.broker))
    run_event_loop(daemon.run())
    return 0


def _learner(args: argparse.Namespace) -> int:
    from .node.broker import parse_broker_url
    from .node.learner import LearnerDaemon

    topology = _load(args.topology)
    daemon = LearnerDaemon(
        topology,
        parse_broker_url(args.broker),
        results=_results_folder(args, topology.job.id),
        startup_timeout=args.startup_timeout,
        on_round=None if args.quiet else _print_round,
    )
    result = run_event_loop(daemon.run())
    return 0 if result.succeeded else 1


def _topology(args: argparse.Namespace) -> int:
    from .topology import generate

    settings = {
        "rounds": args.rounds,
        "learning_rate": args.learning_rate,
        "key_bits": args.key_bits,
        "min_contributors": args.min_contributors,
    }
    options = {key: value for key, value in settings.items() if value is not None}
    if args.no_randomise:
        options["randomise"] = False
    job_id = args.job_id or f"{args.dataset}-{args.shape}"
    if args.shape == "chain":
        path = generate.write_chain(args.out, args.dataset, args.providers, job_id=job_id, seed=args.seed,
                                    overwrite=args.overwrite, **options)
    else:
        path = generate.write_tree(args.out, args.dataset, args.providers, args.fanout, job_id=job_id,
                                   seed=args.seed, overwrite=args.overwrite, **options)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
