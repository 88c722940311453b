"""``gradchain run``: a whole job on one machine, every node its own process.

The launcher starts an embedded broker on a free loopback port (unless the
user names a broker), starts one ``gradchain node`` process per node and one
``gradchain learner`` process, waits for the learner, and then trains the same
model in plaintext on the pooled provider data with the same settings so the
user can compare the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GradchainError, TransportError
from ..models import get_model
from ..models.training import StepSchedule, plaintext_distributed_gd
from ..topology import Topology, load_eval_data, load_provider_data
from .broker import BrokerAddress, embedded_broker, parse_broker_url
from .learner import write_json_atomically

logger = logging.getLogger(__name__)

#: Seconds the launcher gives node processes to exit after the learner has finished.
NODE_EXIT_TIMEOUT = 30.0


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """Plaintext gradient descent on the pooled provider data, same settings."""

    rounds: int
    loss: float | None
    accuracy: float | None
    theta: list[float]


def plaintext_baseline(topology: Topology) -> Baseline:
    """Train the job's model in plaintext on every provider's rows, as one party could if the data were pooled."""
    job = topology.job
    model = get_model(job.model)
    shards = [load_provider_data(topology, node_id) for node_id in topology.providers]
    evaluate_on = load_eval_data(topology)
    result = plaintext_distributed_gd(
        shards,
        model,
        StepSchedule(kind=job.schedule, learning_rate=job.learning_rate),
        job.l2,
        job.rounds,
        job.tolerance,
        evaluate_on=evaluate_on,
    )
    scores: dict[str, float] = {}
    if evaluate_on is not None:
        scores = model.evaluate(result.theta, *evaluate_on)
    return Baseline(
        rounds=result.rounds_run,
        loss=scores.get("loss"),
        accuracy=scores.get("accuracy"),
        theta=[float(x) for x in np.asarray(result.theta)],
    )


@contextlib.asynccontextmanager
async def _broker_for(url: str | None) -> AsyncIterator[BrokerAddress]:
    if url is not None:
        yield parse_broker_url(url)
        return
    async with embedded_broker() as address:
        logger.info("embedded MQTT broker listening on %s", address.url)
        yield address


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gradchain", *args]


async def run_job(
    topology: Topology,
    *,
    broker_url: str | None,
    results: Path,
    log_level: str = "INFO",
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the whole job and return the merged metrics (also written to ``results/metrics.json``)."""
    results.mkdir(parents=True, exist_ok=True)
    logs = results / "logs"
    logs.mkdir(exist_ok=True)
    topology_path = str(topology.path)
    environment = dict(os.environ, PYTHONUNBUFFERED="1")

    async with _broker_for(broker_url) as broker:
        nodes: dict[str, asyncio.subprocess.Process] = {}
        log_files = []
        try:
            for node_id in topology.nodes:
                log_file = open(logs / f"{node_id}.log", "wb")  # noqa: SIM115 - closed in finally
                log_files.append(log_file)
                nodes[node_id] = await asyncio.create_subprocess_exec(
                    *_command("node", "--id", node_id, topology_path, "--broker", broker.url,
                              "--log-level", log_level),
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    env=environment,
                )
            learner_args = ["learner", topology_path, "--broker", broker.url, "--results", str(results),
                            "--log-level", log_level, "--log-file", str(logs / f"{topology.learner.id}.log")]
            if quiet:
                learner_args.append("--quiet")
            learner = await asyncio.create_subprocess_exec(*_command(*learner_args), env=environment)
            learner_exit = await _wait_for_learner(learner, nodes)
            if learner_exit != 0:
                raise GradchainError(
                    f"the learner exited with status {learner_exit}; see {logs} for each node's log"
                )
            await _wait_for_nodes(nodes)
        finally:
            for process in nodes.values():
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            for log_file in log_files:
                log_file.close()

    metrics_path = results / "metrics.json"
    metrics: dict[str, Any] = json.loads(metrics_path.read_text())
    baseline = plaintext_baseline(topology)
    metrics["baseline_rounds"] = baseline.rounds
    metrics["baseline_loss"] = baseline.loss
    metrics["baseline_accuracy"] = baseline.accuracy
    metrics["baseline_theta"] = baseline.theta
    metrics["node_exit_codes"] = {node_id: process.returncode for node_id, process in nodes.items()}
    write_json_atomically(metrics_path, metrics)
    return metrics


async def _wait_for_learner(
    learner: asyncio.subprocess.Process, nodes: dict[str, asyncio.subprocess.Process]
) -> int:
    """Wait for the learner; stop it early if a node process dies before the job ends."""
    learner_task = asyncio.create_task(learner.wait())
    node_tasks = {asyncio.create_task(process.wait()): node_id for node_id, process in nodes.items()}
    pending: set[asyncio.Task[int]] = {learner_task, *node_tasks}
    try:
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if learner_task in done:
                return learner_task.result()
            for task in done:
                node_id = node_tasks[task]
                code = task.result()
                if code != 0:
                    learner.send_signal(signal.SIGTERM)
                    await learner.wait()
                    raise TransportError(
                        f"node {node_id} exited with status {code} before the job finished; "
                        f"see its log for the reason"
                    )
    finally:
        for task in pending:
            task.cancel()


async def _wait_for_nodes(nodes: dict[str, asyncio.subprocess.Process]) -> None:
    waits = [process.wait() for process in nodes.values()]
    try:
        await asyncio.wait_for(asyncio.gather(*waits), NODE_EXIT_TIMEOUT)
    except TimeoutError:
        stuck = sorted(node_id for node_id, process in nodes.items() if process.returncode is None)
        logger.warning("nodes %s did not exit within %g s of the job's end; killing them", stuck, NODE_EXIT_TIMEOUT)
