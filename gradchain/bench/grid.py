"""``gradchain bench``: run the grid of topologies, provider counts, gradient sizes and modes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..node.broker import (
    BrokerAddress,
    EmbeddedBroker,
    find_mosquitto,
    mosquitto_broker,
    parse_broker_url,
)
from .analysis import fit_cost_model, predict, shape_of
from .options import PREDICT_FOR, BenchOptions, add_arguments, options_from, parse_topology
from .report import NOT_AVAILABLE, environment, mosquitto_version, write_results
from .runner import (
    Configuration,
    RunSettings,
    obfuscators_per_round,
    prepare_keys,
    run_configuration,
)

logger = logging.getLogger(__name__)


def configurations(options: BenchOptions) -> list[Configuration]:
    """Return the grid in run order: small jobs first, so a broken setup fails early."""
    grid = []
    for size in options.sizes:
        for providers in options.providers:
            for topology in options.topologies:
                kind, fanout = parse_topology(topology)
                for mode in options.modes:
                    grid.append(
                        Configuration(
                            kind=kind, fanout=fanout, providers=providers, size=size, mode=mode
                        )
                    )
    return grid


@contextlib.asynccontextmanager
async def _broker(
    options: BenchOptions,
) -> AsyncIterator[tuple[BrokerAddress, int | None, dict[str, Any]]]:
    """Yield the broker's address, its pid when the benchmark started it, and its description."""
    if options.broker_url is not None:
        address = parse_broker_url(options.broker_url)
        yield address, None, {"kind": "remote", "url": address.url}
        return
    executable = None if options.embedded else find_mosquitto()
    if executable is not None:
        async with mosquitto_broker(executable=executable) as broker:
            yield (
                broker.address,
                broker.pid,
                {
                    "kind": "mosquitto",
                    "url": broker.address.url,
                    "version": mosquitto_version(executable),
                },
            )
        return
    async with EmbeddedBroker() as embedded:
        # NOTE: the embedded broker runs in this process, so its CPU time is
        # not sampled separately and the bench's own work competes with it.
        yield embedded.address, None, {"kind": "embedded (amqtt)", "url": embedded.address.url}


async def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run every configuration, fit the cost model and write the results; return the report."""
    started = time.monotonic()
    grid = []
    skipped = []
    for config in configurations(options):
        needed = obfuscators_per_round(config, options.key_bits)
        if options.max_obfuscators and needed > options.max_obfuscators:
            skipped.append(
                {
                    "id": config.id,
                    "obfuscators_per_round": needed,
                    "reason": f"the providers need {needed} obfuscators per round together, above "
                    f"--max-obfuscators {options.max_obfuscators}; on one machine their pool refills "
                    "share its cores; run it with --max-obfuscators 0",
                }
            )
        else:
            grid.append(config)
    if (options.out / "topology.json").exists():
        print(f"replacing the results of an earlier run in {options.out} (use --out to keep them)")
    options.out.mkdir(parents=True, exist_ok=True)
    # The bench writes these key files itself, and the warnings about them would repeat for every job.
    logging.getLogger("gradchain.topology.load").setLevel(logging.ERROR)
    with contextlib.ExitStack() as stack:
        if options.work is not None:
            work_dir = options.work
        else:
            work_dir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="gradchain-bench-"))
            )
        report = await _run_grid(options, grid, skipped, work_dir)
    report["environment"]["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    report["environment"]["seconds"] = round(time.monotonic() - started, 1)
    for path in write_results(report, options.out):
        print(f"wrote {path}")
    return report


async def _run_grid(
    options: BenchOptions, grid: list[Configuration], skipped: list[dict[str, Any]], work_dir: Path
) -> dict[str, Any]:
    """Run the configurations of ``grid`` with job folders in ``work_dir`` and return the report."""
    keys = prepare_keys(work_dir, options.key_bits)
    rows = []
    async with _broker(options) as (address, broker_pid, broker_description):
        report: dict[str, Any] = {
            "environment": environment(options.command, broker_description),
            "settings": {
                "providers": list(options.providers),
                "sizes": list(options.sizes),
                "topologies": list(options.topologies),
                "modes": list(options.modes),
                "rounds": options.rounds,
                "warmup": options.warmup,
                "key_bits": options.key_bits,
                "hosts": options.hosts,
                "link": None
                if options.link_latency is None and options.link_bandwidth_mbps is None
                else {
                    "latency_s": options.link_latency or 0.0,
                    "bandwidth_mbps": options.link_bandwidth_mbps,
                },
            },
            "not_available": NOT_AVAILABLE,
            "skipped": skipped,
        }
        settings = RunSettings(
            rounds=options.rounds,
            warmup=options.warmup,
            key_bits=options.key_bits,
            hosts=options.hosts,
            broker=address,
            broker_pid=broker_pid,
            work_dir=work_dir,
            link_latency=options.link_latency,
            link_bandwidth_mbps=options.link_bandwidth_mbps,
        )
        for number, config in enumerate(grid, start=1):
            print(f"[{number}/{len(grid)}] {config.id}", flush=True)
            row = await run_configuration(config, settings, keys)
            rows.append(row)
            print(
                f"    median {row['latency_s']['median']:.3f} s, p95 {row['latency_s']['p95']:.3f} s, "
                f"{row['critical_path']['hops_median']:g} hops on the critical path, "
                f"{row['seconds']:.0f} s for the job",
                flush=True,
            )
    report["configurations"] = rows
    report["cost_model"] = cost_models(rows, options)
    return report


def cost_models(rows: list[dict[str, Any]], options: BenchOptions) -> list[dict[str, Any]]:
    """Fit one cost model per gradient size and mode; store each row's prediction as ``model_s``."""
    models = []
    for size in options.sizes:
        for mode in options.modes:
            group = [row for row in rows if row["size"] == size and row["mode"] == mode]
            if not group:
                continue
            model = fit_cost_model(
                {
                    "latency_s": row["latency_s"]["median"],
                    "encrypt_s": row["critical_path"]["stages_s"]["encrypt"],
                    "decrypt_s": row["critical_path"]["stages_s"]["decrypt"],
                    "hops": row["critical_path"]["hops_median"],
                    "extra_inputs": row["extra_inputs"],
                }
                for row in group
            )
            for row, predicted in zip(group, model.pop("predicted_s"), strict=True):
                row["model_s"] = predicted
            predictions = []
            for topology in options.topologies:
                kind, fanout = parse_topology(topology)
                for providers in PREDICT_FOR:
                    shape = shape_of(kind, providers, fanout)
                    predictions.append(
                        {
                            "topology": topology,
                            "providers": providers,
                            "hops": shape.hops,
                            "extra_inputs": shape.extra_inputs,
                            "latency_s": predict(model, shape),
                        }
                    )
            models.append({"size": size, "mode": mode, **model, "predictions": predictions})
    return models


def main(argv: list[str] | None, command: str) -> int:
    """Parse ``argv``, run the benchmark and return the exit status."""
    parser = argparse.ArgumentParser(
        description="Measure round latency of chain and tree topologies over MQTT."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    from ..node.common import run_event_loop

    run_event_loop(run_bench(options_from(args, command)))
    return 0
