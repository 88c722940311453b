"""The daemon of one provider or aggregator node: a thin IO shell around
:class:`~gradchain.protocol.NodeProtocol`.

It keeps one MQTT connection, which it restores after a broker restart or a
network loss, feeds every received message to the protocol, and carries out
the actions the protocol returns: it acknowledges contributions, forwards the
sum, resends it until it is acknowledged, and forwards what it has when the
round's deadline passes. Gradient computation and Paillier encryption run in
a worker thread so the event loop keeps answering the broker while a
contribution is being encrypted. A fault plan, when given, wraps the
connection in a :class:`~gradchain.faults.FaultyTransport`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..crypto import PublicKey, load_public_key, make_encoding
from ..crypto.obfuscators import ObfuscatorPool
from ..crypto.settings import make_obfuscator_pool
from ..errors import (
    ConfigError,
    DuplicateMessageError,
    ProtocolError,
    SealingError,
    SettingsMismatchError,
    SignatureError,
    StaleMessageError,
)
from ..faults import FaultInjector, FaultPlan, FaultyTransport
from ..models import get_model
from ..models.interface import count_flagged_rows, create_local_state, flags_rows
from ..protocol import (
    Action,
    ComputeContribution,
    Contribution,
    Dropped,
    Finished,
    JobDone,
    NodeConfig,
    NodeProtocol,
    RoundStart,
    SendAck,
    SendContribution,
    encode,
)
from ..protocol.flags import FlagCount, encode_flag_count, flags_topic
from ..protocol.routing import deadline_share
from ..protocol.topics import check_topic, inbox_topic, round_topic, status_wildcard
from ..topology import Topology, load_provider_data
from .backoff import resend_backoff
from .broker import BrokerAddress
from .common import NodeLogger, log_dropped
from .connection import Connection
from .contribution import compute_contribution
from .eventlog import EventLog
from .liveness import DEFAULT_OFFLINE_WAIT
from .signatures import load_message_signing
from .timing import RoundTimer, round_time
from .transport import MqttTransport, Received, Transport

logger = logging.getLogger(__name__)


@dataclass
class NodeReport:
    """Counters of one node's run, for its exit log line and for tests."""

    node_id: str
    rounds_contributed: int = 0
    values_clipped: int = 0
    messages_dropped: int = 0
    resends: int = 0
    obfuscators_from_pool: int = 0
    obfuscators_on_the_spot: int = 0
    finish_reason: str | None = None
    #: Rows flagged with the final theta when the model flags rows, else None.
    rows_flagged: int | None = None
    encrypt_seconds: list[float] = field(default_factory=list)


def read_pinned_key(topology: Topology, log: NodeLogger) -> PublicKey | None:
    """Read the learner's public key file, which nodes use to reject any other key.

    Returns None, with a warning, when the file is not on this machine: the
    node then trusts whatever key the round messages carry.
    """
    path = topology.learner.public_key
    if not path.exists():
        log.warning(
            "no learner public key file at %s, so any client that can publish on the round topic "
            "can make this node encrypt under its own key; copy the learner's public key file there",
            path,
        )
        return None
    return load_public_key(path)


def node_config(
    topology: Topology, node_id: str, pinned_key: PublicKey | None = None
) -> NodeConfig:
    """Build the protocol configuration of ``node_id`` from its topology."""
    spec = topology.nodes[node_id]
    encoding = make_encoding(topology.crypto, len(topology.providers))
    inputs = topology.inputs_of(node_id)
    upstream = topology.nodes_upstream_of(node_id)
    return NodeConfig(
        job=topology.job.id,
        node_id=node_id,
        successor=topology.successor_of(node_id),
        inputs={source: topology.providers_upstream_of(source) for source in inputs},
        is_provider=spec.data is not None,
        parameters=topology.job.features,
        ciphertext_count=encoding.ciphertext_count(
            topology.randomiser.payload_length(topology.job.features)
        ),
        key_bits=topology.crypto.key_bits,
        fallbacks=topology.path_to_learner(node_id)[2:],
        rerouted_inputs={
            other: topology.providers_upstream_of(other) for other in upstream - inputs
        },
        feeders={other: topology.inputs_of(other) for other in upstream},
        deadline_share=deadline_share(topology.distance_to_learner(node_id), topology.hops()),
        pinned_key=pinned_key,
        portion_paths=topology.portion_paths(node_id) if spec.portions > 1 else (),
        settings_digest=topology.settings_digest,
        portion_routes={
            provider: routes
            for provider, routes in topology.portion_routes().items()
            if provider in topology.providers_upstream_of(node_id)
        },
    )


class NodeDaemon:
    """One provider or aggregator process."""

    def __init__(
        self,
        topology: Topology,
        node_id: str,
        broker: BrokerAddress,
        *,
        faults: FaultPlan | None = None,
        events_dir: Path | None = None,
        offline_wait: float = DEFAULT_OFFLINE_WAIT,
    ) -> None:
        if node_id not in topology.nodes:
            raise KeyError(node_id)
        self.topology = topology
        self.node_id = node_id
        self.broker = broker
        self.log = NodeLogger(logger, node_id)
        self.events = EventLog(events_dir, node_id)
        self.timer = RoundTimer(self.events)
        self.injector = None if faults is None else FaultInjector(faults, node_id, self.events)
        self.protocol = NodeProtocol(
            node_config(topology, node_id, read_pinned_key(topology, self.log))
        )
        self.encoding = make_encoding(topology.crypto, len(topology.providers))
        #: Precomputed obfuscators for the learner's current key; created at the first round.
        self._pool: ObfuscatorPool | None = None
        self.model = get_model(topology.job.model, topology.model_settings)
        self.report = NodeReport(node_id=node_id)
        self.instance = secrets.token_hex(8)
        self.signing = load_message_signing(topology, node_id, self.log)
        self._features: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        #: Provider-local model state, such as a recommender's user factors; None for most models.
        self._model_state: object | None = None
        if topology.nodes[node_id].data is not None:
            self._features, self._labels = load_provider_data(topology, node_id)
            self._model_state = create_local_state(self.model, self._features, self._labels)
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"gradchain-{node_id}"
        )
        self._tasks: set[asyncio.Task[None]] = set()

        job = topology.job.id
        self.connection = Connection(
            broker,
            job=job,
            node_id=node_id,
            instance=self.instance,
            subscriptions=(round_topic(job), inbox_topic(job, node_id), status_wildcard(job)),
            log=self.log,
            events=self.events,
            wrap=None if self.injector is None else self._wrap_transport,
            offline_wait=offline_wait,
            signing=self.signing,
        )
        self._finished = asyncio.Event()
        #: Runs whose RoundStart this node rejected for other topology settings, with the reason.
        self._mismatched_runs: dict[str, str] = {}
        self._mismatch_error: str | None = None
        self._deadline_timer: asyncio.Task[None] | None = None
        self._resender: asyncio.Task[None] | None = None

    def _wrap_transport(self, inner: MqttTransport) -> Transport:
        assert self.injector is not None
        return FaultyTransport(inner, self.injector)

    async def run(self) -> NodeReport:
        """Serve rounds until the learner announces that the job is done.

        Raises DuplicateNodeError when another process runs this node id.
        """
        role = "provider" if self._features is not None else "aggregator"
        self.log.info("starting as %s, sending to %s", role, self.protocol.config.successor)
        if not self.topology.crypto.encryption and self._features is not None:
            self.log.warning(
                "crypto.encryption is false: this provider's gradients cross the broker unencrypted"
            )
        try:
            await self.connection.run(self._handle, self._finished, on_connected=self._resend_now)
            if self._mismatch_error is not None:
                raise ConfigError(f"the job ended without this node: {self._mismatch_error}")
        finally:
            for task in self._tasks:
                task.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)
            if self._pool is not None:
                self._record_pool_stats(self._pool)
                self._pool.close()
            self.events.close()
        self.log.info(
            "stopped after %d contributions (%d values clipped, %d messages dropped, %d resends, "
            "%d obfuscators from the pool, %d computed on the spot): %s",
            self.report.rounds_contributed,
            self.report.values_clipped,
            self.report.messages_dropped,
            self.report.resends,
            self.report.obfuscators_from_pool,
            self.report.obfuscators_on_the_spot,
            self.report.finish_reason,
        )
        return self.report

    async def _handle(self, received: Received) -> None:
        if not received.payload:
            return  # a cleared retained message
        arrived_at = time.time()
        handling_started = time.perf_counter()
        try:
            message = self.signing.open(received.payload)
            check_topic(received.topic, message, receiver=self.node_id)
        except ProtocolError as error:
            self._note_dropped(received.topic, error, round=error.round)
            return
        round_before = (self.protocol.run, self.protocol.round)
        try:
            actions = self.protocol.receive(message)
        except ProtocolError as error:
            self._note_dropped(received.topic, error, round=getattr(message, "round", None))
            actions = []
            if isinstance(error, SettingsMismatchError) and isinstance(message, RoundStart):
                self._mismatched_runs[message.run] = error.reason
            elif isinstance(message, JobDone) and message.run in self._mismatched_runs:
                # The learner finished a run that this node could never join, so
                # waiting for the next one would only hide the error.
                self._mismatch_error = self._mismatched_runs[message.run]
                self.log.error("the job ended without this node: %s", self._mismatch_error)
                self._finished.set()
        else:
            self.log.debug("received %s", message)
        if isinstance(message, Contribution):
            self.timer.input(
                message.round, message.sender, arrived_at, time.perf_counter() - handling_started
            )
        for ack in self.protocol.acks_to_send():
            await self._send_ack(ack)
        if (
            isinstance(message, RoundStart)
            and (self.protocol.run, self.protocol.round) != round_before
        ):
            self.timer.start(self.protocol.round, at=arrived_at)
            self._start_round_timers()
        if isinstance(message, JobDone) and any(isinstance(action, Finished) for action in actions):
            await self._report_flag_count(message)
        await self._execute(actions)

    async def _report_flag_count(self, done: JobDone) -> None:
        """Count this provider's rows that the model flags with the final theta, and send the count.

        Only the count leaves the node: the flags, residuals and threshold
        stay here and are not logged.
        """
        if self._features is None or self._labels is None or not flags_rows(self.model):
            return
        try:
            flagged = count_flagged_rows(
                self.model, np.asarray(done.theta, dtype=float), self._features, self._labels
            )
        except ValueError as error:
            self.log.error(
                "flagging rows with the final theta of run %s failed: %s", done.run, error
            )
            return
        self.report.rows_flagged = flagged
        message = FlagCount(
            job=self.topology.job.id, run=done.run, node=self.node_id, flagged=flagged
        )
        published = await self.connection.publish(
            flags_topic(self.topology.job.id, self.node_id),
            self.signing.sign(encode_flag_count(message)),
        )
        if published:
            self.log.info("flagged %d rows with the final theta and sent the count", flagged)
        else:
            self.log.warning(
                "flagged %d rows with the final theta, but sending the count failed", flagged
            )

    def _note_dropped(self, topic: str, error: ProtocolError, *, round: int | None) -> None:
        self.report.messages_dropped += 1
        log_dropped(self.log, topic, error)
        if isinstance(error, DuplicateMessageError):
            event = "dropped_duplicate"
        elif isinstance(error, StaleMessageError):
            event = "dropped_stale"
        elif isinstance(error, SignatureError):
            event = "dropped_signature"
        elif isinstance(error, SealingError):
            event = "dropped_sealing"
        else:
            event = "dropped_invalid"
        self.events.record(
            event, run=self.protocol.run, round=round, sender=error.sender, reason=error.reason
        )

    def _start_round_timers(self) -> None:
        """Start the new round's deadline timer and stop the last round's timers."""
        for task in (self._deadline_timer, self._resender):
            if task is not None:
                task.cancel()
        self._resender = None
        delay = self.protocol.deadline_delay
        assert delay is not None
        self._deadline_timer = self._spawn(
            self._deadline(self.protocol.round, delay), f"deadline-{self.protocol.round}"
        )

    async def _deadline(self, round: int, delay: float) -> None:
        await asyncio.sleep(delay)
        actions = self.protocol.deadline_reached(round)
        if actions:
            self.log.info(
                "round %d: deadline of %.2f s passed, forwarding what has arrived", round, delay
            )
        await self._execute(actions)

    async def _resend_until_acknowledged(self, round: int, timeout: float) -> None:
        for delay in resend_backoff(timeout).delays():
            await asyncio.sleep(delay)
            actions = self.protocol.retry_due(round)
            if not actions:
                return
            await self._execute(actions)

    async def _resend_now(self) -> None:
        """Resend an unacknowledged contribution at once after reconnecting."""
        await self._execute(self.protocol.retry_due(self.protocol.round))

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=f"{self.node_id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, ComputeContribution):
                self._spawn(self._contribute_when_due(action), f"contribute-{action.round}")
            elif isinstance(action, SendContribution):
                await self._send(action)
            elif isinstance(action, Dropped):
                self._note_dropped("early contribution", action.error, round=action.error.round)
            elif isinstance(action, Finished):
                self.report.finish_reason = action.reason
                self.log.info("job done: %s", action.reason)
                self._finished.set()
            else:
                self.log.error("the node protocol returned an unexpected action %r", action)

    async def _contribute_when_due(self, action: ComputeContribution) -> None:
        """Compute the own contribution, after the delay of a straggler fault if the plan has one."""
        delay = 0.0 if self.injector is None else self.injector.hold_own_contribution(action.round)
        if delay > 0:
            self.log.warning(
                "round %d: a straggler fault delays the own contribution by %g s",
                action.round,
                delay,
            )
            await asyncio.sleep(delay)
        await self._contribute(action)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("%s failed: %r", task.get_name(), task.exception())

    def _pool_for(self, key: PublicKey) -> ObfuscatorPool:
        """Return the obfuscator pool of ``key``, replacing the pool of an older key."""
        if self._pool is not None and self._pool.public_key == key:
            return self._pool
        if self._pool is not None:
            self._record_pool_stats(self._pool)
            self._pool.close()
        # A background thread fills the pool with gmpy2 calls that release the
        # GIL; worker processes would multiply when many nodes share a machine.
        self._pool = make_obfuscator_pool(
            self.topology.crypto,
            key,
            ciphertexts_per_contribution=self.protocol.config.ciphertext_count
            * max(1, len(self.protocol.config.portion_paths)),
            processes=0,
        ).start()
        return self._pool

    def _record_pool_stats(self, pool: ObfuscatorPool) -> None:
        stats = pool.stats()
        self.report.obfuscators_from_pool += stats.taken_from_pool
        self.report.obfuscators_on_the_spot += stats.computed_on_the_spot

    async def _contribute(self, action: ComputeContribution) -> None:
        assert self._features is not None and self._labels is not None
        key = PublicKey(n=action.public_key, hs=action.public_key_hs)
        encrypt = self.topology.crypto.encryption
        pool = self._pool_for(key) if encrypt else None
        loop = asyncio.get_running_loop()
        started = loop.time()
        started_at = time.time()
        result = await loop.run_in_executor(
            self._executor,
            lambda: compute_contribution(
                model=self.model,
                features=self._features,  # type: ignore[arg-type]
                labels=self._labels,  # type: ignore[arg-type]
                theta=np.asarray(action.theta, dtype=float),
                public_key=key,
                encoding=self.encoding,
                randomise=self.topology.job.randomise,
                randomiser=self.topology.randomiser,
                state=self._model_state,
                obfuscators=pool,
                encrypt=encrypt,
                portions=max(1, len(self.protocol.config.portion_paths)),
            ),
        )
        seconds = loop.time() - started
        self.timer.mark(action.round, "encrypt", started_at, seconds)
        self.report.encrypt_seconds.append(seconds)
        self.report.values_clipped += result.clipped
        if result.clipped:
            self.log.warning(
                "round %d: %d gradient values were clipped to +-%g; if the model is diverging, "
                "lower job.learning_rate, and if gradients this large are expected, raise crypto.clip",
                action.round,
                result.clipped,
                self.topology.crypto.clip,
            )
        self.log.debug("round %d: contribution encrypted in %.3f s", action.round, seconds)
        ready_at = time.time()
        adding_started = time.perf_counter()
        try:
            if result.portions:
                actions = self.protocol.own_portions_ready(action.round, result.portions)
            else:
                actions = self.protocol.own_contribution_ready(action.round, result.ciphertexts)
        except ProtocolError as error:
            log_dropped(self.log, "own contribution", error)
            return
        self.timer.input(action.round, self.node_id, ready_at, time.perf_counter() - adding_started)
        self.report.rounds_contributed += 1
        await self._execute(actions)

    async def _send(self, action: SendContribution) -> None:
        assert self.protocol.public_key is not None
        message = action.message
        encoding_started = time.perf_counter()
        payload = self.signing.seal_for(
            action.to,
            message,
            encode(message, ciphertext_bytes=self.protocol.public_key.ciphertext_bytes),
        )
        sent_at = time.time()
        publishing_started = time.perf_counter()
        published = await self.connection.publish(
            inbox_topic(self.topology.job.id, action.to), payload
        )
        self.timer.record(
            message.run,
            message.round,
            to=action.to,
            reason=action.reason,
            contributors=len(message.contributors),
            bytes=len(payload),
            encode_s=round(publishing_started - encoding_started, 6),
            sent_at=round_time(sent_at),
            publish_s=round(time.perf_counter() - publishing_started, 6),
        )

        details = {
            "to": action.to,
            "contributors": list(message.contributors),
            "published": published,
        }
        if action.reason in ("retry", "reroute"):
            self.report.resends += 1
        if action.reason == "deadline":
            self.events.record("forwarded_partial", run=message.run, round=message.round, **details)
        if action.reason == "retry":
            self.events.record("retried", run=message.run, round=message.round, **details)
        if action.skipped:
            self.events.record(
                "rerouted",
                run=message.run,
                round=message.round,
                skipped=list(action.skipped),
                **details,
            )

        self.log.info(
            "round %d: %s the sum of %d contributors to %s%s",
            message.round,
            _SEND_VERBS.get(action.reason, "forwarded"),
            len(message.contributors),
            action.to,
            f", around offline {list(action.skipped)}" if action.skipped else "",
        )

        if self._resender is None or self._resender.done():
            timeout = self.protocol.timeout or self.topology.job.round_timeout
            self._resender = self._spawn(
                self._resend_until_acknowledged(message.round, timeout), f"resend-{message.round}"
            )

    async def _send_ack(self, action: SendAck) -> None:
        payload = self.signing.seal_for(action.to, action.message, encode(action.message))
        await self.connection.publish(inbox_topic(self.topology.job.id, action.to), payload)


_SEND_VERBS = {
    "complete": "forwarded",
    "deadline": "forwarded at the deadline",
    "retry": "resent",
    "reroute": "rerouted",
}
