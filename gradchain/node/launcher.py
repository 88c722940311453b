"""``gradchain run``: a whole job on one machine, every node its own process.

The launcher starts an embedded broker on a free loopback port, or a
mosquitto process, unless the user names a broker. It starts one
``gradchain node`` process per node and one ``gradchain learner`` process and
waits for the learner. Then it trains the same model in plaintext on the
pooled provider data with the same settings, and solves the same objective
exactly on that data where a standard solver exists
(:mod:`gradchain.node.comparison`), so the user can compare the three.

With a fault plan it passes the plan to every process, and restarts the
processes that a crash fault ended when the plan gives ``restart_after`` (the
learner with ``--resume``). It restarts the broker at the rounds the plan
names, runs the job again without faults as a reference, and writes
``report.md`` and ``report.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import aiomqtt
import numpy as np

from ..errors import ConfigError, GradchainError, ProtocolError, TransportError
from ..faults import CRASH_EXIT_CODE, BrokerRestartFault, FaultPlan, load_fault_plan
from ..models import get_model
from ..models.training import ScheduleKind, StepSchedule, plaintext_distributed_gd
from ..protocol import RoundStart
from ..protocol.signing import decode_unverified
from ..protocol.topics import round_topic
from ..topology import Topology, load_eval_data, load_provider_data
from .backoff import RECONNECT
from .broker import (
    BrokerAddress,
    EmbeddedBroker,
    MosquittoBroker,
    mosquitto_broker,
    parse_broker_url,
)
from .common import NodeLogger
from .comparison import pooled_reference
from .eventlog import EventLog
from .learner import load_or_create_keys, write_json_atomically
from .signatures import create_signing_keys
from .report import write_report

logger = logging.getLogger(__name__)

#: Seconds the launcher gives node processes to exit after the learner has finished.
NODE_EXIT_TIMEOUT = 30.0


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """Plaintext gradient descent on the pooled provider data, same settings."""

    rounds: int
    loss: float | None
    accuracy: float | None
    #: Every figure the model's evaluate() returns, e.g. mae for linear regression.
    scores: dict[str, float]
    theta: list[float]
    #: Why plaintext gradient descent failed, for example because it diverged; None when it ran.
    error: str | None = None


def plaintext_baseline(topology: Topology) -> Baseline:
    """Train the job's model in plaintext on every provider's rows, as one party could if the data were pooled."""
    job = topology.job
    model = get_model(job.model, topology.model_settings)
    shards = [load_provider_data(topology, node_id) for node_id in topology.providers]
    evaluate_on = load_eval_data(topology)
    try:
        # Overflow while diverging surfaces as the error below, not as numpy warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            result = plaintext_distributed_gd(
                shards,
                model,
                StepSchedule(
                    kind=cast(ScheduleKind, job.schedule), learning_rate=job.learning_rate
                ),
                job.l2,
                job.rounds,
                job.tolerance,
                evaluate_on=evaluate_on,
                parameters=job.features,
            )
    except (ConfigError, ValueError) as error:
        # The encrypted run has already ended, so a diverging plaintext reference
        # is reported in metrics.json instead of ending the command with a traceback.
        return Baseline(rounds=0, loss=None, accuracy=None, scores={}, theta=[], error=str(error))
    scores: dict[str, float] = {}
    if evaluate_on is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            scores = model.evaluate(result.theta, *evaluate_on)
    return Baseline(
        rounds=result.rounds_run,
        loss=scores.get("loss"),
        accuracy=scores.get("accuracy"),
        scores={name: float(value) for name, value in scores.items()},
        theta=[float(x) for x in np.asarray(result.theta)],
    )


@dataclass(frozen=True, kw_only=True)
class RunningBroker:
    """The broker of one run, and the handle to restart it when the launcher started it."""

    address: BrokerAddress
    handle: EmbeddedBroker | MosquittoBroker | None


@contextlib.asynccontextmanager
async def _broker_for(url: str | None, *, mosquitto: bool) -> AsyncIterator[RunningBroker]:
    if url is not None:
        yield RunningBroker(address=parse_broker_url(url), handle=None)
        return
    if mosquitto:
        async with mosquitto_broker() as broker:
            logger.info("mosquitto listening on %s", broker.address.url)
            yield RunningBroker(address=broker.address, handle=broker)
        return
    async with EmbeddedBroker() as embedded:
        logger.info("embedded MQTT broker listening on %s", embedded.address.url)
        yield RunningBroker(address=embedded.address, handle=embedded)


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gradchain", *args]


async def run_job(
    topology: Topology,
    *,
    broker_url: str | None,
    results: Path,
    log_level: str = "INFO",
    quiet: bool = False,
    faults: Path | None = None,
    mosquitto: bool = False,
    reference: bool = True,
) -> dict[str, Any]:
    """Run the whole job and return the merged metrics (also written to ``results/metrics.json``).

    With ``faults`` the job runs under that fault plan and, unless
    ``reference`` is False, a second time without faults into
    ``results/reference``. Writes ``report.md`` and ``report.json`` into
    ``results`` in every case.
    """
    plan = None if faults is None else load_fault_plan(faults, topology)
    if plan is not None and plan.broker_restarts and broker_url is not None:
        raise ConfigError(
            f"{faults}: faults[{plan.broker_restarts[0].index}] restarts the broker, but gradchain can "
            f"only restart a broker it started; drop --broker {broker_url} or add --mosquitto"
        )
    # The key pairs exist before any node starts, so every node can pin the
    # learner's public key from its file and load the signing keys it needs.
    load_or_create_keys(topology, NodeLogger(logger, topology.learner.id))
    created = create_signing_keys(topology)
    if created:
        logger.info("created the signing key pairs of %s", ", ".join(created))
    _cancel_on_signals()
    metrics = await _run_once(
        topology,
        broker_url=broker_url,
        mosquitto=mosquitto,
        results=results,
        plan=plan,
        log_level=log_level,
        quiet=quiet,
    )
    baseline = plaintext_baseline(topology)
    metrics["baseline_rounds"] = baseline.rounds
    metrics["baseline_loss"] = baseline.loss
    metrics["baseline_accuracy"] = baseline.accuracy
    metrics["baseline_scores"] = baseline.scores
    metrics["baseline_theta"] = baseline.theta
    metrics["baseline_error"] = baseline.error
    metrics["pooled_reference"] = pooled_reference(
        topology, theta=metrics.get("theta"), baseline_theta=baseline.theta or None
    )

    reference_metrics = None
    if plan is not None and reference:
        if not quiet:
            print("running the job again without faults, as the reference", flush=True)
        reference_metrics = await _run_once(
            topology,
            broker_url=broker_url,
            mosquitto=mosquitto,
            results=results / "reference",
            plan=None,
            log_level=log_level,
            quiet=True,
        )
        for key in ("rounds", "loss", "accuracy", "theta", "succeeded"):
            metrics[f"reference_{key}"] = reference_metrics.get(key)
    write_json_atomically(results / "metrics.json", metrics)
    write_report(results, metrics, plan=plan, reference=reference_metrics)
    return metrics


def _cancel_on_signals() -> None:
    """Turn SIGINT and SIGTERM into a cancellation, so the processes and the broker are stopped."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, task.cancel)


async def _run_once(
    topology: Topology,
    *,
    broker_url: str | None,
    mosquitto: bool,
    results: Path,
    plan: FaultPlan | None,
    log_level: str,
    quiet: bool,
) -> dict[str, Any]:
    """Run the job once with every node a process and return the learner's metrics."""
    results.mkdir(parents=True, exist_ok=True)
    # A checkpoint of an earlier run in the same folder must not be resumed by
    # this one, and its events must not mix into this run's report.
    (results / "checkpoint.json").unlink(missing_ok=True)
    for old_events in (results / "events").glob("*.jsonl"):
        old_events.unlink()
    async with _broker_for(broker_url, mosquitto=mosquitto) as broker:
        supervisor = _Supervisor(
            topology, broker.address, results, plan=plan, log_level=log_level, quiet=quiet
        )
        restarter = None
        if plan is not None and plan.broker_restarts:
            assert broker.handle is not None
            restarter = asyncio.create_task(
                _restart_broker_at_rounds(
                    broker.handle, topology.job.id, plan.broker_restarts, results / "events"
                )
            )
        try:
            learner_exit = await supervisor.run()
            if learner_exit != 0:
                raise GradchainError(
                    f"the learner exited with status {learner_exit}; see {results / 'logs'} for each node's log"
                )
            await supervisor.wait_for_nodes()
        finally:
            if restarter is not None:
                restarter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await restarter
            await supervisor.stop()

    metrics: dict[str, Any] = json.loads((results / "metrics.json").read_text())
    metrics["node_exit_codes"] = supervisor.exit_codes()
    metrics["restarts"] = dict(supervisor.restarts)
    if plan is not None:
        metrics["fault_plan"] = str(plan.path)
    write_json_atomically(results / "metrics.json", metrics)
    return metrics


def _last_error(log: Path) -> str:
    """Return ": " and the last ERROR line of a node log, or "" when there is none."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if " ERROR " in line or line.startswith("gradchain node: error"):
            return f": {line.strip()[:300]}"
    return ""


class _Supervisor:
    """Supervisor of the node and learner processes of one run, which restarts those a crash fault ended."""

    def __init__(
        self,
        topology: Topology,
        broker: BrokerAddress,
        results: Path,
        *,
        plan: FaultPlan | None,
        log_level: str,
        quiet: bool,
    ) -> None:
        self.topology = topology
        self.broker = broker
        self.results = results
        self.plan = plan
        self.log_level = log_level
        self.quiet = quiet
        self.logs = results / "logs"
        self.events = results / "events"
        self.environment = dict(os.environ, PYTHONUNBUFFERED="1")
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.crashes: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self._log_files: list[IO[bytes]] = []
        self._pending_restarts: dict[asyncio.Task[None], str] = {}
        #: Processes whose exit has been dealt with; a restarted process is a new object.
        self._handled: set[asyncio.subprocess.Process] = set()
        #: Node logs opened in this run; a restart appends to its own log.
        self._opened_logs: set[str] = set()

    def _arguments(self, process_id: str, *, resume: bool) -> list[str]:
        common = [
            str(self.topology.path),
            "--broker",
            self.broker.url,
            "--log-level",
            self.log_level,
            "--events",
            str(self.events),
        ]
        if self.plan is not None:
            common += ["--faults", str(self.plan.path)]
        if process_id != self.topology.learner.id:
            return ["node", "--id", process_id, *common]
        arguments = [
            "learner",
            *common,
            "--results",
            str(self.results),
            "--log-file",
            str(self.logs / f"{process_id}.log"),
        ]
        if self.quiet:
            arguments.append("--quiet")
        if resume:
            arguments.append("--resume")
        return arguments

    async def _start(self, process_id: str, *, resume: bool = False) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        is_learner = process_id == self.topology.learner.id
        output: IO[bytes] | None = None
        if not is_learner:
            # A new run starts each log afresh, so that an old error cannot be
            # mistaken for this run's; a restarted node appends to its log.
            mode = "ab" if process_id in self._opened_logs else "wb"
            self._opened_logs.add(process_id)
            output = open(self.logs / f"{process_id}.log", mode)  # noqa: SIM115 - closed in stop()
            self._log_files.append(output)
        self.processes[process_id] = await asyncio.create_subprocess_exec(
            *_command(*self._arguments(process_id, resume=resume)),
            stdout=output,
            stderr=None if is_learner else asyncio.subprocess.STDOUT,
            env=self.environment,
        )

    async def run(self) -> int:
        """Start every process, wait for the learner and return its exit status.

        Raises TransportError when a node exits with an error that no crash
        fault explains; the learner is stopped first.
        """
        for node_id in self.topology.nodes:
            await self._start(node_id)
        learner_id = self.topology.learner.id
        await self._start(learner_id)
        try:
            while True:
                # Exits are read from returncode rather than from the wait tasks,
                # because a process can end in the same step that its wait task
                # is cancelled after another one finished.
                exited = [
                    (process_id, process)
                    for process_id, process in self.processes.items()
                    if process.returncode is not None and process not in self._handled
                ]
                for process_id, process in exited:
                    self._handled.add(process)
                    code = process.returncode
                    assert code is not None
                    if process_id == learner_id and not self._schedule_restart(process_id, code):
                        return code
                    if (
                        process_id != learner_id
                        and code != 0
                        and not self._schedule_restart(process_id, code)
                    ):
                        await self._stop_learner()
                        log = self.logs / f"{process_id}.log"
                        raise TransportError(
                            f"node {process_id} exited with status {code} before the job finished"
                            f"{_last_error(log)}; its log is {log}"
                        )
                if exited:
                    continue
                waits = {
                    asyncio.create_task(process.wait()): process_id
                    for process_id, process in self.processes.items()
                    if process.returncode is None
                }
                watched: set[asyncio.Task[Any]] = {*waits, *self._pending_restarts}
                finished, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for restart in [task for task in self._pending_restarts if task in finished]:
                    del self._pending_restarts[restart]
                    restart.result()  # raises when starting the process failed
                for wait in waits:
                    if wait not in finished:
                        wait.cancel()
        finally:
            for task in self._pending_restarts:
                task.cancel()
            self._pending_restarts.clear()

    def _schedule_restart(self, process_id: str, code: int) -> bool:
        """Restart ``process_id`` later when a crash fault with ``restart_after`` ended it.

        Returns False when the exit is not such a crash; a planned crash
        without ``restart_after`` returns True and leaves the process down.
        """
        if code != CRASH_EXIT_CODE or self.plan is None:
            return False
        crashes = self.plan.crashes_of(process_id)
        count = self.crashes.get(process_id, 0)
        if count >= len(crashes):
            return False
        self.crashes[process_id] = count + 1
        fault = crashes[count]
        if fault.restart_after is None:
            logger.warning(
                "%s crashed as planned by faults[%d] and stays down", process_id, fault.index
            )
            return True
        logger.warning(
            "%s crashed as planned by faults[%d]; restarting it in %g s",
            process_id,
            fault.index,
            fault.restart_after,
        )
        task = asyncio.create_task(self._restart_later(process_id, fault.restart_after))
        self._pending_restarts[task] = process_id
        return True

    async def _restart_later(self, process_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self.restarts[process_id] = self.restarts.get(process_id, 0) + 1
        await self._start(process_id, resume=process_id == self.topology.learner.id)

    async def _stop_learner(self) -> None:
        learner = self.processes.get(self.topology.learner.id)
        if learner is not None and learner.returncode is None:
            learner.send_signal(signal.SIGTERM)
            await learner.wait()

    async def wait_for_nodes(self) -> None:
        """Wait for the node processes to exit after the job, and kill those that do not."""
        nodes = {
            node_id: process
            for node_id, process in self.processes.items()
            if node_id in self.topology.nodes
        }
        try:
            await asyncio.wait_for(
                asyncio.gather(*(process.wait() for process in nodes.values())), NODE_EXIT_TIMEOUT
            )
        except TimeoutError:
            stuck = sorted(
                node_id for node_id, process in nodes.items() if process.returncode is None
            )
            logger.warning(
                "nodes %s did not exit within %g s of the job's end; killing them",
                stuck,
                NODE_EXIT_TIMEOUT,
            )

    async def stop(self) -> None:
        """Kill the processes that still run and close their log files."""
        for process in self.processes.values():
            if process.returncode is None:
                process.kill()
                await process.wait()
        for log_file in self._log_files:
            log_file.close()

    def exit_codes(self) -> dict[str, int | None]:
        """Return the exit status of each node's latest process."""
        return {node_id: self.processes[node_id].returncode for node_id in self.topology.nodes}


async def _restart_broker_at_rounds(
    broker: EmbeddedBroker | MosquittoBroker,
    job: str,
    faults: tuple[BrokerRestartFault, ...],
    events_dir: Path,
) -> None:
    """Watch the round topic and restart the broker when the rounds of ``faults`` begin.

    The watching client loses its connection with each restart and
    reconnects with backoff until every fault has fired. Two faults for one
    round fire as one restart with the downtime of the later fault.
    """
    events = EventLog(events_dir, "broker")
    due = {fault.round: fault for fault in faults}
    delays = RECONNECT.delays()
    try:
        while due:
            try:
                async with aiomqtt.Client(
                    broker.address.host,
                    broker.address.port,
                    identifier=f"gradchain-launcher-{secrets.token_hex(4)}",
                    protocol=aiomqtt.ProtocolVersion.V311,
                ) as client:
                    await client.subscribe(round_topic(job), qos=1)
                    delays = RECONNECT.delays()
                    async for message in client.messages:
                        start = _round_start(message.payload)
                        # A round missed while reconnecting fires at the next round seen.
                        passed = [
                            number for number in due if start is not None and number <= start.round
                        ]
                        if start is None or not passed:
                            continue
                        fault = due.pop(min(passed))
                        events.record(
                            "fault",
                            run=start.run,
                            round=start.round,
                            kind=fault.kind,
                            fault=fault.index,
                            downtime=fault.downtime,
                        )
                        events.sync()
                        logger.warning(
                            "restarting the broker at round %d for %g s",
                            start.round,
                            fault.downtime,
                        )
                        await broker.stop()
                        await asyncio.sleep(fault.downtime)
                        await broker.start()
                        # The next step of the message loop raises MqttError for the lost
                        # connection, and the loop above connects again.
            except aiomqtt.MqttError as error:
                logger.info("the broker watcher lost its connection (%s); reconnecting", error)
                await asyncio.sleep(next(delays))
    finally:
        events.close()


def _round_start(payload: object) -> RoundStart | None:
    if not isinstance(payload, bytes) or not payload:
        return None
    try:
        message = decode_unverified(payload)
    except ProtocolError:
        return None
    return message if isinstance(message, RoundStart) else None
