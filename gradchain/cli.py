"""The ``gradchain`` command line.

    gradchain run TOPOLOGY [--faults PLAN]    the whole job on this machine
    gradchain node --id ID TOPOLOGY           one provider or aggregator
    gradchain learner TOPOLOGY [--resume]     the learner
    gradchain topology chain|tree|multi write a topology and split a dataset
    gradchain swarm TOPOLOGY            many nodes in one process
    gradchain bench [--quick]           measure chain and tree topologies

Only this module configures logging handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError, GradchainError
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


def _add_fault_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--faults",
        type=Path,
        metavar="PLAN",
        help="inject this process's faults from a fault plan (TOML)",
    )
    parser.add_argument(
        "--events",
        type=Path,
        metavar="DIR",
        help="folder for this process's JSON-lines event file (default: results/JOB_ID/events)",
    )
    parser.add_argument(
        "--offline-wait",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds to wait for an online status of this node id to turn offline before exiting "
        "with an error, which a crashed predecessor's last will does (default: 5)",
    )


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
    run.add_argument(
        "--results",
        type=Path,
        metavar="DIR",
        help="folder for metrics.json, the model and logs (default: results/JOB_ID)",
    )
    run.add_argument("--quiet", action="store_true", help="print only the final summary")
    run.add_argument(
        "--mosquitto",
        action="store_true",
        help="start a mosquitto process on a free loopback port instead of the embedded broker",
    )
    run.add_argument(
        "--faults",
        type=Path,
        metavar="PLAN",
        help="inject the faults of this fault plan (TOML, see docs/faults.md)",
    )
    run.add_argument(
        "--no-reference",
        action="store_true",
        help="with --faults, skip the second, fault-free run that the report compares against",
    )
    _add_logging_options(run, "INFO")

    node = commands.add_parser("node", help="run one provider or aggregator node")
    node.add_argument("--id", required=True, dest="node_id", help="this node's id in the topology")
    node.add_argument("topology", type=Path, help="topology file (TOML)")
    node.add_argument(
        "--broker", required=True, metavar="URL", help="MQTT broker as mqtt://HOST[:PORT]"
    )
    _add_fault_options(node)
    _add_logging_options(node, "INFO")

    learner = commands.add_parser("learner", help="run the learner, which holds the private key")
    learner.add_argument("topology", type=Path, help="topology file (TOML)")
    learner.add_argument(
        "--broker", required=True, metavar="URL", help="MQTT broker as mqtt://HOST[:PORT]"
    )
    learner.add_argument(
        "--results",
        type=Path,
        metavar="DIR",
        help="folder for metrics.json and model.json (default: results/JOB_ID)",
    )
    learner.add_argument(
        "--startup-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for every node to come online (default: 120)",
    )
    learner.add_argument("--quiet", action="store_true", help="do not print a line per round")
    learner.add_argument(
        "--resume",
        action="store_true",
        help="continue the run recorded in RESULTS/checkpoint.json instead of starting a new one",
    )
    _add_fault_options(learner)
    _add_logging_options(learner, "INFO")

    swarm = commands.add_parser(
        "swarm",
        help="run many provider and aggregator nodes in one process, each with its own MQTT connection",
    )
    swarm.add_argument("topology", type=Path, help="topology file (TOML)")
    swarm.add_argument(
        "--broker", required=True, metavar="URL", help="MQTT broker as mqtt://HOST[:PORT]"
    )
    swarm.add_argument(
        "--nodes", metavar="ID,ID,...", help="node ids to run (default: every node of the topology)"
    )
    swarm.add_argument(
        "--hosts",
        type=int,
        default=1,
        metavar="K",
        help="with --host-index, run only every K-th node of the topology (default: 1)",
    )
    swarm.add_argument(
        "--host-index",
        type=int,
        default=0,
        metavar="I",
        help="which of the K shares of nodes to run, from 0 (default: 0)",
    )
    _add_fault_options(swarm)
    _add_logging_options(swarm, "WARNING")

    keys = commands.add_parser(
        "keys",
        help="create the learner's key pair and every signing and sealing key pair of a "
        "topology, and print which files to copy to which machine",
    )
    keys.add_argument("topology", type=Path, help="topology file (TOML)")

    from .bench.options import add_arguments as add_bench_arguments

    bench = commands.add_parser(
        "bench",
        help="measure round latency of chain and tree topologies on this machine",
        description="Run real jobs over a real MQTT broker for a grid of provider counts, gradient sizes and "
        "topologies, with and without encryption, and write JSON, a markdown table and plots.",
    )
    add_bench_arguments(bench)

    predict = commands.add_parser(
        "predict-dose", help="compute one patient's warfarin dose in mg/week from a trained model"
    )
    predict.add_argument("model", type=Path, help="model.json written by a warfarin job's learner")
    predict.add_argument(
        "--statistics",
        type=Path,
        required=True,
        metavar="FILE",
        help="standardisation.json that prepared the training data",
    )
    predict.add_argument(
        "values",
        nargs="+",
        metavar="KEY=VALUE",
        help="age (years), height (cm), weight (kg), race, vkorc1, cyp2c9, carbamazepine, "
        "phenytoin, rifampin, amiodarone",
    )

    topology = commands.add_parser(
        "topology", help="write a topology file and split a dataset across providers"
    )
    shapes = topology.add_subparsers(dest="shape", required=True, metavar="SHAPE")
    for shape, text in (
        ("chain", "p1 -> p2 -> ... -> learner"),
        ("tree", "providers -> aggregators -> learner"),
        ("multi", "each provider splits its contribution across several aggregators"),
    ):
        sub = shapes.add_parser(shape, help=text)
        sub.add_argument(
            "--providers", type=int, required=True, metavar="N", help="number of data providers"
        )
        if shape == "tree":
            sub.add_argument(
                "--fanout",
                type=int,
                default=4,
                metavar="F",
                help="inputs per aggregator (default: 4)",
            )
        if shape == "multi":
            sub.add_argument(
                "--portions",
                type=int,
                default=2,
                metavar="M",
                help="random shares each provider splits its contribution into, one per "
                "aggregator (default: 2)",
            )
            sub.add_argument(
                "--aggregators",
                type=int,
                metavar="A",
                help="aggregators to spread the portions over (default: M)",
            )
        sub.add_argument(
            "--dataset",
            default="breast-cancer",
            type=_dataset_name,
            help="data set to split: breast-cancer (default), phones, digits, digit-attributes, "
            "warfarin, warfarin-outliers, movielens, or synthetic:FEATURES[xROWS] for generated "
            "logistic-regression data; warfarin and movielens read --data-path",
        )
        sub.add_argument(
            "--data-path",
            type=Path,
            metavar="PATH",
            help="the IWPC CSV (warfarin, default: the prepared copy in examples/warfarin) "
            "or the MovieLens 100K folder (movielens, required)",
        )
        sub.add_argument(
            "--model-setting",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a [model] setting such as components=4 for pca or rank=8 for factorisation; repeatable",
        )
        sub.add_argument(
            "--out", type=Path, required=True, metavar="DIR", help="folder to write into"
        )
        sub.add_argument("--job-id", help="job id (default: DATASET-SHAPE)")
        sub.add_argument("--rounds", type=int, help="maximum rounds")
        sub.add_argument("--learning-rate", type=float, help="initial step size eta_0")
        sub.add_argument(
            "--l2", type=float, help="L2 penalty lambda of the learner's update (default 0.001)"
        )
        sub.add_argument(
            "--key-bits", type=int, help="Paillier modulus size in bits (default 2048)"
        )
        sub.add_argument("--min-contributors", type=int, help="smallest total the learner decrypts")
        sub.add_argument(
            "--no-randomise",
            action="store_true",
            help="draw no random numbers (a_i = 1, no masks), for an exact comparison with "
            "plaintext gradient descent",
        )
        sub.add_argument(
            "--randomiser",
            type=_randomiser_name,
            metavar="NAME",
            help="how providers randomise their gradients: scalar (default), vector, additive "
            "or uniform; docs/randomisers.md compares them",
        )
        sub.add_argument(
            "--no-uniform-normalise",
            action="store_true",
            help="with --randomiser uniform, send no sampling ratios: the learner uses "
            "2 * sum / count",
        )
        sub.add_argument("--seed", type=int, default=0, help="seed of the data split (default: 0)")
        sub.add_argument(
            "--overwrite", action="store_true", help="replace an existing topology in DIR"
        )
        sub.add_argument(
            "--no-signing",
            action="store_true",
            help="write no [signing] table, so messages travel unsigned and unsealed "
            "(default: signed and sealed, with the key files in DIR/keys)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `run` passes --log-level on to the node processes, whose logs go to files;
    # its own console shows the rounds and warnings only.
    level = (
        "WARNING"
        if args.command in ("run", "topology", "predict-dose", "bench", "keys")
        else args.log_level
    )
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
        if args.command == "swarm":
            return _swarm(args)
        if args.command == "keys":
            return _keys(args)
        if args.command == "bench":
            return _bench(args, argv)
        if args.command == "predict-dose":
            return _predict_dose(args)
    except GradchainError as error:
        print(f"gradchain {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        # `gradchain run` turns SIGINT and SIGTERM into a cancellation after
        # stopping its node processes and its broker.
        print(f"gradchain {args.command}: interrupted", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")


def _load(path: Path):  # type: ignore[no-untyped-def]
    from .topology import load_topology

    return load_topology(path)


def _results_folder(args: argparse.Namespace, job_id: str) -> Path:
    return args.results if args.results is not None else Path("results") / job_id


def _number_or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _format_scores(scores: dict[str, float]) -> str:
    """Format held-out figures as "loss 0.1234  accuracy 0.9561", loss first."""
    names = sorted(scores, key=lambda name: (name != "loss", name != "accuracy", name))
    return "  ".join(f"{name} {scores[name]:.4g}" for name in names)


def _print_round(record, max_rounds: int) -> None:  # type: ignore[no-untyped-def]
    scores = _format_scores(record.scores) if record.scores else "no held-out data"
    # The console counts model updates; a failed round is repeated under a new
    # round number, which the logs and report.md use.
    logged = f"  (logged as round {record.round})" if record.round != record.iteration else ""
    print(
        f"round {record.iteration:>4}/{max_rounds}  {scores}  "
        f"contributors {len(record.contributors)}  {record.seconds:.2f} s{logged}",
        flush=True,
    )


def _run(args: argparse.Namespace) -> int:
    from .node.launcher import run_job

    topology = _load(args.topology)
    results = _results_folder(args, topology.job.id)
    shape = (
        f"{len(topology.providers)} providers, {len(topology.nodes)} nodes, {topology.hops()} hops"
    )
    print(f"job {topology.job.id}: {shape}, {topology.crypto.key_bits}-bit key", flush=True)
    metrics = run_event_loop(
        run_job(
            topology,
            broker_url=args.broker,
            results=results,
            log_level=args.log_level,
            quiet=args.quiet,
            faults=args.faults,
            mosquitto=args.mosquitto,
            reference=not args.no_reference,
        )
    )
    _print_summary(metrics, results)
    return 0 if metrics.get("succeeded") else 1


def _print_summary(metrics: dict, results: Path) -> None:  # type: ignore[type-arg]
    from .node.comparison import describe_comparison, describe_flagged

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    print(
        f"finished after {metrics['rounds']} rounds in {metrics['seconds']:.1f} s: {metrics['reason']}"
    )
    encrypted = metrics.get("scores") or {}
    plaintext = metrics.get("baseline_scores") or {}
    print(f"  encrypted:  {_format_scores(encrypted) if encrypted else 'no held-out data'}")
    if metrics.get("baseline_error"):
        print(f"  plaintext:  failed: {metrics['baseline_error']}")
    else:
        print(
            f"  plaintext:  {_format_scores(plaintext) if plaintext else 'no held-out data'}"
            f"  (gradient descent on the pooled data, same settings)"
        )
    if metrics["accuracy"] is not None and metrics.get("baseline_accuracy") is not None:
        gap = 100 * (metrics["accuracy"] - metrics["baseline_accuracy"])
        print(f"  difference: {gap:+.2f} percentage points")
    pooled = metrics.get("pooled_reference")
    if pooled:
        exact = pooled.get("scores") or {}
        print(
            f"  exact:      {_format_scores(exact) if exact else 'no held-out data'}"
            f"  ({pooled['method']})"
        )
        comparison = describe_comparison(pooled.get("comparison"))
        if comparison is not None:
            if str(metrics.get("reason", "")).startswith("reached the round limit"):
                # Both gradient descent runs stop early; the exact minimiser can lie far away.
                comparison += " (gradient descent stopped at the round limit, short of the minimiser)"
            print(f"  vs exact:   {comparison}")
    flagged = describe_flagged(metrics.get("flagged_rows"))
    if flagged is not None:
        print(f"  flagged:    {flagged}")
    theta = metrics.get("theta") or []
    if 0 < len(theta) <= 8:
        print("  theta:      [" + ", ".join(f"{value:.4f}" for value in theta) + "]")
    if metrics.get("reference_accuracy") is not None:
        print(
            f"  no faults:  accuracy {percent(metrics['reference_accuracy'])}"
            f"  loss {_number_or_dash(metrics.get('reference_loss'))}"
            f"  (the same job without the fault plan)"
        )
    print(f"  metrics:    {results / 'metrics.json'}")
    print(f"  report:     {results / 'report.md'}")


def _node(args: argparse.Namespace) -> int:
    from .node.broker import parse_broker_url
    from .node.daemon import NodeDaemon

    topology = _load(args.topology)
    if args.node_id not in topology.nodes:
        known = ", ".join(topology.nodes)
        print(
            f"gradchain node: error: no node {args.node_id!r} in {args.topology} (known: {known})",
            file=sys.stderr,
        )
        return 2
    daemon = NodeDaemon(
        topology,
        args.node_id,
        parse_broker_url(args.broker),
        faults=_load_faults(args, topology),
        events_dir=_events_folder(args, topology.job.id),
        offline_wait=args.offline_wait,
    )
    run_event_loop(daemon.run())
    return 0


def _swarm(args: argparse.Namespace) -> int:
    from .bench.swarm import nodes_of_host, run_swarm
    from .node.broker import parse_broker_url

    topology = _load(args.topology)
    if args.nodes:
        node_ids = [node_id.strip() for node_id in args.nodes.split(",") if node_id.strip()]
    else:
        node_ids = nodes_of_host(topology, args.host_index, args.hosts)
    run_event_loop(
        run_swarm(
            topology,
            node_ids,
            parse_broker_url(args.broker),
            events_dir=_events_folder(args, topology.job.id),
            faults=_load_faults(args, topology),
            offline_wait=args.offline_wait,
        )
    )
    return 0


def _bench(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    import shlex

    try:
        from .bench.grid import run_bench
    except ImportError as error:
        raise ConfigError(
            f"gradchain bench needs the bench extra ({error.name} is missing): pip install 'gradchain[bench]'"
        ) from error
    from .bench.options import options_from

    arguments = list(sys.argv[1:] if argv is None else argv)
    command = "gradchain " + " ".join(shlex.quote(argument) for argument in arguments)
    run_event_loop(run_bench(options_from(args, command)))
    return 0


def _dataset_name(text: str) -> str:
    from .data import DATASETS, SYNTHETIC_PREFIX

    if text in DATASETS or text.startswith(SYNTHETIC_PREFIX):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown data set {text!r} (use one of: {', '.join(DATASETS)})"
    )


def _randomiser_name(text: str) -> str:
    from .randomisers import RANDOMISERS

    if text in RANDOMISERS:
        return text
    raise argparse.ArgumentTypeError(
        f"unknown randomiser {text!r} (use one of: {', '.join(RANDOMISERS)})"
    )


def _load_faults(args: argparse.Namespace, topology):  # type: ignore[no-untyped-def]
    """Load the fault plan of --faults, warning about the faults only `gradchain run` can carry out."""
    if args.faults is None:
        return None
    from .faults import load_fault_plan

    plan = load_fault_plan(args.faults, topology)
    process_id = getattr(args, "node_id", None) or topology.learner.id
    if any(fault.restart_after is not None for fault in plan.crashes_of(process_id)):
        logger.info(
            "%s: restart_after takes effect only under `gradchain run`; otherwise restart %s yourself",
            args.faults,
            process_id,
        )
    if plan.broker_restarts:
        logger.info(
            "%s: broker_restart faults are carried out by `gradchain run` alone", args.faults
        )
    return plan


def _events_folder(args: argparse.Namespace, job_id: str) -> Path:
    return args.events if args.events is not None else Path("results") / job_id / "events"


def _learner(args: argparse.Namespace) -> int:
    from .node.broker import parse_broker_url
    from .node.learner import LearnerDaemon

    topology = _load(args.topology)
    results = _results_folder(args, topology.job.id)
    daemon = LearnerDaemon(
        topology,
        parse_broker_url(args.broker),
        results=results,
        startup_timeout=args.startup_timeout,
        on_round=None if args.quiet else _print_round,
        resume=args.resume,
        faults=_load_faults(args, topology),
        events_dir=args.events if args.events is not None else results / "events",
        offline_wait=args.offline_wait,
    )
    result = run_event_loop(daemon.run())
    return 0 if result.succeeded else 1


def _keys(args: argparse.Namespace) -> int:
    from .node.keys import describe_key_files, ensure_deployment_keys

    topology = _load(args.topology)
    created = ensure_deployment_keys(topology)
    print(describe_key_files(topology, created))
    return 0


def _predict_dose(args: argparse.Namespace) -> int:
    from .models.warfarin import predict_dose

    values: dict[str, object] = {}
    for pair in args.values:
        key, separator, text = pair.partition("=")
        if not separator or not key:
            raise ConfigError(f"invalid patient value {pair!r}: expected KEY=VALUE, e.g. age=67")
        if key in values:
            raise ConfigError(
                f"patient value {key} given twice ({values[key]!r} and {text!r}); give it once"
            )
        values[key] = text
    dose = predict_dose(args.model, values, args.statistics)
    print(f"{dose:.1f} mg/week")
    return 0


def _parse_model_settings(pairs: Sequence[str]) -> dict[str, int | float]:
    settings: dict[str, int | float] = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key:
            raise ConfigError(
                f"invalid --model-setting {pair!r}: expected KEY=VALUE, e.g. components=4"
            )
        try:
            settings[key] = int(text)
        except ValueError:
            try:
                settings[key] = float(text)
            except ValueError:
                raise ConfigError(
                    f"invalid --model-setting {pair!r}: {text!r} is not a number"
                ) from None
    return settings


def _topology(args: argparse.Namespace) -> int:
    from .topology import generate

    settings = {
        "rounds": args.rounds,
        "learning_rate": args.learning_rate,
        "l2": args.l2,
        "key_bits": args.key_bits,
        "min_contributors": args.min_contributors,
    }
    options = {key: value for key, value in settings.items() if value is not None}
    if args.no_randomise:
        options["randomise"] = False
    if args.randomiser is not None:
        options["randomiser"] = args.randomiser
    if args.no_uniform_normalise:
        options["uniform_normalise"] = False
    if args.data_path is not None:
        options["data_path"] = args.data_path
    if args.model_setting:
        options["model_settings"] = _parse_model_settings(args.model_setting)
    if args.no_signing:
        options["signing"] = False
    job_id = args.job_id or f"{args.dataset}-{args.shape}"
    if args.shape == "chain":
        path = generate.write_chain(
            args.out,
            args.dataset,
            args.providers,
            job_id=job_id,
            seed=args.seed,
            overwrite=args.overwrite,
            **options,
        )
    elif args.shape == "multi":
        path = generate.write_multi(
            args.out,
            args.dataset,
            args.providers,
            args.portions,
            aggregators=args.aggregators,
            job_id=job_id,
            seed=args.seed,
            overwrite=args.overwrite,
            **options,
        )
    else:
        path = generate.write_tree(
            args.out,
            args.dataset,
            args.providers,
            args.fanout,
            job_id=job_id,
            seed=args.seed,
            overwrite=args.overwrite,
            **options,
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
