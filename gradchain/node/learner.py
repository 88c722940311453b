"""The learner daemon: a thin IO shell around :class:`~gradchain.protocol.LearnerProtocol`.

It owns the Paillier private key. It waits until every node of the topology
reports online, opens rounds, decrypts each round's total in a worker thread,
evaluates the model on the held-out data it may hold, and writes the results.
Each time it opens a round it writes a checkpoint, from which a restarted
learner resumes the run (``gradchain learner --resume``). Its broker
connection is restored after a broker restart, and the current RoundStart is
then published again because a restarted broker has lost it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..crypto import (
    PrivateKey,
    PublicKey,
    decrypt_vector,
    generate_keypair,
    load_private_key,
    make_encoding,
    open_unencrypted_vector,
    save_private_key,
    save_public_key,
)
from ..errors import (
    ConfigError,
    CryptoError,
    DuplicateMessageError,
    ProtocolError,
    SealingError,
    SignatureError,
    StaleMessageError,
    TransportError,
)
from ..faults import FaultInjector, FaultPlan, FaultyTransport
from ..models import get_model
from ..models.interface import flags_rows, initial_theta
from ..models.training import ScheduleKind, StepSchedule
from ..protocol import (
    Action,
    Contribution,
    DecryptTotal,
    Finished,
    JobDone,
    LearnerConfig,
    LearnerProtocol,
    Liveness,
    PublishRound,
    RoundCompleted,
    RoundFailed,
    RoundStart,
    Status,
    encode,
)
from ..protocol.flags import FlagCount, flags_wildcard
from ..protocol.topics import check_topic, inbox_topic, round_topic, status_wildcard
from ..topology import Topology, load_eval_data
from .broker import BrokerAddress
from .checkpoint import LearnerCheckpoint, load_checkpoint, save_checkpoint
from .common import NodeLogger, log_dropped
from .connection import Connection
from .eventlog import EventLog
from .liveness import DEFAULT_OFFLINE_WAIT
from .signatures import load_message_signing
from .timing import RoundTimer
from .transport import MqttTransport, Received, Transport

#: Seconds the learner keeps trying to publish JobDone after the job ended.
JOB_DONE_TIMEOUT = 60.0

#: Seconds the learner waits after JobDone for the providers' counts of flagged rows.
FLAG_COUNT_TIMEOUT = 30.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    """One completed round as the user sees it."""

    round: int
    iteration: int
    contributors: list[str]
    seconds: float
    step: float
    learning_rate: float
    loss: float | None
    accuracy: float | None
    #: Every figure the model's evaluate() returns on the held-out data.
    scores: dict[str, float] = field(default_factory=dict)
    #: Decrypted Σ a_i of the scalar randomiser, the mean of the per-element scale totals
    #: of the vector and normalised uniform ones, and None for the others. With
    #: randomisation off it equals the number of contributors.
    scale_total: float | None = None
    #: Providers sampled for the round; None means every provider.
    participants: list[str] | None = None


@dataclass
class LearnerResult:
    """Outcome of a learner run, written to ``metrics.json``."""

    job: str
    run: str
    reason: str = ""
    succeeded: bool = False
    theta: list[float] = field(default_factory=list)
    history: list[RoundRecord] = field(default_factory=list)
    failed_rounds: list[dict[str, Any]] = field(default_factory=list)
    key_bits: int = 0
    key_fingerprint: str = ""
    seconds: float = 0.0
    #: Rows each provider flagged with the final theta, by provider id; None when the
    #: model flags no rows. A provider whose count did not arrive is missing.
    flagged_rows: dict[str, int] | None = None

    def metrics(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else None
        return {
            "job": self.job,
            "run": self.run,
            "reason": self.reason,
            "succeeded": self.succeeded,
            "rounds": len(self.history),
            "loss": None if last is None else last.loss,
            "accuracy": None if last is None else last.accuracy,
            "scores": {} if last is None else last.scores,
            "seconds": round(self.seconds, 3),
            "key_bits": self.key_bits,
            "key_fingerprint": self.key_fingerprint,
            "contributors": [record.contributors for record in self.history],
            "scale_totals": [record.scale_total for record in self.history],
            "history": [asdict(record) for record in self.history],
            "failed_rounds": self.failed_rounds,
            "theta": self.theta,
            "flagged_rows": self.flagged_rows,
            "flagged_rows_total": None
            if self.flagged_rows is None
            else sum(self.flagged_rows.values()),
        }


def load_or_create_keys(topology: Topology, log: NodeLogger) -> PrivateKey:
    """Load the learner's private key, or generate and save a key pair if there is none."""
    private_path = topology.learner.private_key
    public_path = topology.learner.public_key
    if private_path.exists():
        key = load_private_key(private_path)
        bits = key.public_key.n.bit_length()
        if bits != topology.crypto.key_bits:
            raise CryptoError(
                f"{private_path} holds a {bits}-bit key but crypto.key_bits is {topology.crypto.key_bits}; "
                "delete the key files to generate a new pair or fix crypto.key_bits"
            )
        log.info("loaded the %d-bit key %s from %s", bits, key.public_key.fingerprint, private_path)
        return key
    kind = "Damgard-Jurik-Nielsen" if topology.crypto.djn else "plain"
    log.info(
        "generating a %d-bit Paillier key pair (%s obfuscators)", topology.crypto.key_bits, kind
    )
    public, private = generate_keypair(topology.crypto.key_bits, djn=topology.crypto.djn)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    save_private_key(private_path, private)
    save_public_key(public_path, public)
    log.info("wrote the key pair %s to %s and %s", public.fingerprint, private_path, public_path)
    return private


def learner_config(topology: Topology) -> LearnerConfig:
    """Build the learner's protocol configuration from its topology."""
    job = topology.job
    learner_id = topology.learner.id
    encoding = make_encoding(topology.crypto, len(topology.providers))
    return LearnerConfig(
        job=job.id,
        learner_id=learner_id,
        inputs={
            source: topology.providers_upstream_of(source)
            for source in topology.inputs_of(learner_id)
        },
        min_contributors=job.min_contributors,
        parameters=job.features,
        ciphertext_count=encoding.ciphertext_count(
            topology.randomiser.payload_length(job.features)
        ),
        randomise=job.randomise,
        randomiser=topology.randomiser,
        schedule=StepSchedule(
            kind=cast(ScheduleKind, job.schedule), learning_rate=job.learning_rate
        ),
        l2=job.l2,
        max_rounds=job.rounds,
        tolerance=job.tolerance,
        round_timeout=job.round_timeout,
        rerouted_inputs={
            other: topology.providers_upstream_of(other)
            for other in set(topology.nodes) - topology.inputs_of(learner_id)
        },
        feeders={node_id: topology.inputs_of(node_id) for node_id in topology.nodes},
        providers=topology.providers,
        sample_fraction=job.sample_fraction,
        seed=job.seed,
        portion_routes=topology.portion_routes(),
        settings_digest=topology.settings_digest,
    )


class LearnerDaemon:
    """The learner process."""

    def __init__(
        self,
        topology: Topology,
        broker: BrokerAddress,
        *,
        results: Path | None = None,
        startup_timeout: float = 120.0,
        on_round: Callable[[RoundRecord, int], None] | None = None,
        resume: bool = False,
        faults: FaultPlan | None = None,
        events_dir: Path | None = None,
        offline_wait: float = DEFAULT_OFFLINE_WAIT,
        before_round: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.topology = topology
        self.broker = broker
        self.results = results
        self.startup_timeout = startup_timeout
        self.on_round = on_round
        #: Awaited before each RoundStart is published; the benchmark uses it to let the nodes go idle.
        self.before_round = before_round
        self.log = NodeLogger(logger, topology.learner.id)
        self.events = EventLog(events_dir, topology.learner.id)
        self.timer = RoundTimer(self.events)
        self.injector = (
            None if faults is None else FaultInjector(faults, topology.learner.id, self.events)
        )
        self.private_key = load_or_create_keys(topology, self.log)
        self.public_key: PublicKey = self.private_key.public_key
        self.encoding = make_encoding(topology.crypto, len(topology.providers))
        self.model = get_model(topology.job.model, topology.model_settings)
        self.eval_data = load_eval_data(topology)
        self.run_id = secrets.token_hex(8)
        self.protocol = LearnerProtocol(
            learner_config(topology),
            run=self.run_id,
            public_key=self.public_key,
            theta=initial_theta(self.model, topology.job.features),
        )
        self.result = LearnerResult(
            job=topology.job.id,
            run=self.run_id,
            key_bits=self.public_key.n.bit_length(),
            key_fingerprint=self.public_key.fingerprint,
        )
        self.online: dict[str, str] = {}
        self._all_online = asyncio.Event()
        self._finished = asyncio.Event()
        self._stopped = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradchain-learner")
        self._timer: asyncio.Task[None] | None = None
        self._round_started = 0.0
        self._round_message: RoundStart | JobDone | None = None
        self._round_published = asyncio.Event()
        self._seconds_before = 0.0
        self._started = time.monotonic()
        self.resumed_from: LearnerCheckpoint | None = None
        if resume:
            self._restore(self._load_checkpoint())
        job = topology.job.id
        subscriptions = [status_wildcard(job), inbox_topic(job, topology.learner.id)]
        #: Providers whose count of flagged rows the learner waits for, set once JobDone is out.
        self._flag_counts_due: set[str] | None = None
        self._flag_counts_complete = asyncio.Event()
        if flags_rows(self.model):
            self.result.flagged_rows = {}
            subscriptions.append(flags_wildcard(job))
        self.signing = load_message_signing(topology, topology.learner.id, self.log)
        self.connection = Connection(
            broker,
            job=job,
            node_id=topology.learner.id,
            instance=secrets.token_hex(8),
            subscriptions=tuple(subscriptions),
            log=self.log,
            events=self.events,
            wrap=None if self.injector is None else self._wrap_transport,
            offline_wait=offline_wait,
            signing=self.signing,
        )

    def _wrap_transport(self, inner: MqttTransport) -> Transport:
        assert self.injector is not None
        return FaultyTransport(inner, self.injector)

    def _load_checkpoint(self) -> LearnerCheckpoint:
        if self.results is None:
            raise ConfigError("resuming needs the results folder that contains checkpoint.json")
        checkpoint = load_checkpoint(self.results)
        where = self.results / "checkpoint.json"
        if checkpoint.finished:
            raise ConfigError(
                f"the run in {where} has already finished; start the learner without --resume"
            )
        if checkpoint.job != self.topology.job.id:
            raise ConfigError(
                f"{where} belongs to job {checkpoint.job!r}, not {self.topology.job.id!r}"
            )
        if checkpoint.key_fingerprint != self.public_key.fingerprint:
            raise ConfigError(
                f"{where} was written with the key {checkpoint.key_fingerprint} from {checkpoint.private_key}, "
                f"but {self.topology.learner.private_key} holds the key {self.public_key.fingerprint}; "
                "restore the run's key files or start a new run without --resume"
            )
        parameters = len(self.protocol.theta)
        if len(checkpoint.theta) != parameters:
            raise ConfigError(
                f"{where} contains {len(checkpoint.theta)} parameters, but the job's model has {parameters}"
            )
        return checkpoint

    def _restore(self, checkpoint: LearnerCheckpoint) -> None:
        """Take over the run, θ and history of ``checkpoint``."""
        self.resumed_from = checkpoint
        self.run_id = checkpoint.run
        self.protocol = LearnerProtocol(
            learner_config(self.topology),
            run=checkpoint.run,
            public_key=self.public_key,
            theta=np.array(checkpoint.theta, dtype=float),
        )
        self.result.run = checkpoint.run
        self.result.history = [RoundRecord(**record) for record in checkpoint.history]
        self.result.failed_rounds = list(checkpoint.failed_rounds)
        self._seconds_before = checkpoint.seconds

    async def run(self) -> LearnerResult:
        """Wait for the nodes, train until the protocol stops, and write the results.

        A fresh run waits until every node is online; a resumed run only until
        ``min_contributors`` providers are.
        """
        started = time.monotonic()
        self._started = started
        connection = asyncio.create_task(
            self.connection.run(self._handle, self._stopped, on_connected=self._republish_round),
            name="learner-connection",
        )
        try:
            await self._wait_or_fail(
                self._all_online, connection, self.startup_timeout, self._startup_error
            )
            checkpoint = self.resumed_from
            if checkpoint is None:
                self.log.info(
                    "all %d nodes are online; starting run %s",
                    len(self.topology.nodes),
                    self.run_id,
                )
                actions = self.protocol.start()
            else:
                self.log.info(
                    "resuming run %s after round %d (iteration %d)",
                    self.run_id,
                    checkpoint.round,
                    checkpoint.iteration,
                )
                self.events.record("resumed", run=self.run_id, round=checkpoint.round)
                actions = self.protocol.resume(
                    last_round=checkpoint.round,
                    iteration=checkpoint.iteration,
                    failed_in_a_row=checkpoint.failed_in_a_row,
                )
            await self._execute(actions)
            await self._wait_or_fail(self._finished, connection, None, None)
            await self._wait_or_fail(
                self._round_published, connection, JOB_DONE_TIMEOUT, self._job_done_error
            )
            if self.result.flagged_rows is not None:
                await self._wait_for_flag_counts(connection)
        finally:
            self._stopped.set()
            if self._timer is not None:
                self._timer.cancel()
            if not connection.done():
                await connection
            self._executor.shutdown(wait=False, cancel_futures=True)
            self.events.close()
        self.result.seconds = self._seconds_before + time.monotonic() - started
        self.result.theta = [float(x) for x in self.protocol.theta]
        if self.results is not None:
            self.write_results(self.results)
            self._save_checkpoint(finished=True)
        return self.result

    async def _wait_for_flag_counts(self, connection: asyncio.Task[None]) -> None:
        """Wait until each provider that was online at JobDone has sent its count of flagged rows.

        Logs a warning naming the providers whose count is missing after
        FLAG_COUNT_TIMEOUT seconds, or when the connection ends first.
        """
        assert self.result.flagged_rows is not None
        due = (set(self.topology.providers) & set(self.online)) - set(self.result.flagged_rows)
        if not due:
            return
        self._flag_counts_due = due
        waiter = asyncio.create_task(self._flag_counts_complete.wait())
        done, _ = await asyncio.wait(
            {waiter, connection}, timeout=FLAG_COUNT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter in done:
            return
        waiter.cancel()
        self.log.warning(
            "no count of flagged rows from %s within %g s of JobDone; metrics.json lists the "
            "providers that sent one",
            sorted(due),
            FLAG_COUNT_TIMEOUT,
        )

    def _note_flag_count(self, topic: str, payload: bytes) -> None:
        """Record a provider's count of flagged rows, dropping it unless it is for this run."""
        try:
            count: FlagCount = self.signing.open_flag_count(payload)
        except ProtocolError as error:
            self._note_dropped(topic, error)
            return
        if count.job != self.topology.job.id or count.run != self.run_id:
            self.log.info("dropped a count of flagged rows of another job or run from %s", topic)
            return
        if count.node not in self.topology.providers or self.result.flagged_rows is None:
            self.log.warning(
                "dropped a count of flagged rows from %s, which is not a provider", topic
            )
            return
        self.result.flagged_rows[count.node] = count.flagged
        self.log.info("provider %s flagged %d rows with the final theta", count.node, count.flagged)
        if self._flag_counts_due is not None:
            self._flag_counts_due.discard(count.node)
            if not self._flag_counts_due:
                self._flag_counts_complete.set()

    def _job_done_error(self) -> Exception:
        return TransportError(
            f"could not publish JobDone to {self.broker.url} within {JOB_DONE_TIMEOUT:g} s; "
            "the nodes keep waiting until they are stopped"
        )

    async def _wait_or_fail(
        self,
        event: asyncio.Event,
        connection: asyncio.Task[None],
        timeout: float | None,
        on_timeout: Callable[[], Exception] | None,
    ) -> None:
        waiter = asyncio.create_task(event.wait())
        done, _ = await asyncio.wait(
            {waiter, connection}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter in done:
            return
        waiter.cancel()
        if connection in done:
            connection.result()  # re-raises the connection's error
            raise TransportError(
                f"the connection to {self.broker.url} closed before the job finished"
            )
        assert on_timeout is not None
        raise on_timeout()

    def _startup_error(self) -> Exception:
        missing = sorted(set(self.topology.nodes) - set(self.online))
        return TransportError(
            f"nodes {missing} did not come online within {self.startup_timeout:g} s; start each with "
            f"`gradchain node --id ID {self.topology.path} --broker {self.broker.url}`"
        )

    async def _handle(self, received: Received) -> None:
        if not received.payload:
            return
        if self.result.flagged_rows is not None and received.topic.startswith(
            flags_wildcard(self.topology.job.id).removesuffix("+")
        ):
            self._note_flag_count(received.topic, received.payload)
            return
        arrived_at = time.time()
        handling_started = time.perf_counter()
        try:
            message = self.signing.open(received.payload)
            check_topic(received.topic, message, receiver=self.topology.learner.id)
        except ProtocolError as error:
            self._note_dropped(received.topic, error)
            return
        if isinstance(message, Status):
            self._note_status(message)
        elif isinstance(message, Contribution):
            self.log.debug("received %s", message)
        try:
            actions = self.protocol.receive(message)
        except ProtocolError as error:
            self._note_dropped(received.topic, error)
            actions = []
        if isinstance(message, Contribution):
            # Includes the additions of the total, which happen when the last input arrives.
            self.timer.input(
                message.round, message.sender, arrived_at, time.perf_counter() - handling_started
            )
        for ack in self.protocol.acks_to_send():
            payload = self.signing.seal_for(ack.to, ack.message, encode(ack.message))
            await self.connection.publish(inbox_topic(self.topology.job.id, ack.to), payload)
        await self._execute(actions)

    def _note_dropped(self, topic: str, error: ProtocolError) -> None:
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
            event, run=self.run_id, round=error.round, sender=error.sender, reason=error.reason
        )

    def _note_status(self, status: Status) -> None:
        if status.job != self.topology.job.id or status.node not in self.topology.nodes:
            return
        if status.state is Liveness.ONLINE:
            self.online[status.node] = status.instance
        else:
            self.online.pop(status.node, None)
            if self._all_online.is_set():
                self.log.warning("node %s went offline", status.node)
        if self.resumed_from is None:
            ready = set(self.online) == set(self.topology.nodes)
        else:
            online_providers = set(self.online) & set(self.topology.providers)
            ready = len(online_providers) >= self.topology.job.min_contributors
        if ready:
            self._all_online.set()

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, PublishRound):
                await self._publish_round(action)
            elif isinstance(action, DecryptTotal):
                await self._decrypt(action)
            elif isinstance(action, RoundCompleted):
                self._record(action)
            elif isinstance(action, RoundFailed):
                self.log.warning(
                    "round %d failed and will be repeated: %s", action.round, action.reason
                )
                self.result.failed_rounds.append({"round": action.round, "reason": action.reason})
                self.events.record(
                    "round_failed", run=self.run_id, round=action.round, reason=action.reason
                )
            elif isinstance(action, Finished):
                self.result.reason = action.reason
                self.result.succeeded = action.succeeded
                self.log.info("finished: %s", action.reason)
                self._finished.set()
            else:
                self.log.error("the learner protocol returned an unexpected action %r", action)

    async def _publish_round(self, action: PublishRound) -> None:
        message = action.message
        if isinstance(message, RoundStart) and self.before_round is not None:
            await self.before_round(message.round)
        self._round_message = message
        if isinstance(message, RoundStart) and self.results is not None:
            self._save_checkpoint(finished=False)
        if isinstance(message, RoundStart):
            self.timer.start(message.round)
        self._round_published.clear()
        if await self.connection.publish(
            round_topic(self.topology.job.id), self.signing.sign(encode(message)), retain=True
        ):
            self._round_published.set()
        if isinstance(message, RoundStart):
            self._round_started = time.monotonic()
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.create_task(self._round_timer(message.round, message.timeout))
            self.log.debug("published %s", message)

    async def _republish_round(self) -> None:
        """Publish the current RoundStart or JobDone again, because a restarted broker has lost it."""
        message = self._round_message
        if message is None:
            return
        if await self.connection.publish(
            round_topic(self.topology.job.id), self.signing.sign(encode(message)), retain=True
        ):
            self._round_published.set()
            self.log.info("published round %d again after reconnecting", message.round)

    def _save_checkpoint(self, *, finished: bool) -> None:
        assert self.results is not None
        checkpoint = LearnerCheckpoint(
            job=self.topology.job.id,
            run=self.run_id,
            round=self.protocol.round,
            iteration=self.protocol.iteration,
            theta=[float(x) for x in self.protocol.theta],
            failed_in_a_row=self.protocol.failed_in_a_row,
            private_key=str(self.topology.learner.private_key),
            key_fingerprint=self.public_key.fingerprint,
            history=[asdict(record) for record in self.result.history],
            failed_rounds=list(self.result.failed_rounds),
            seconds=round(self._seconds_before + time.monotonic() - self._started, 3),
            finished=finished,
        )
        try:
            save_checkpoint(self.results, checkpoint)
        except OSError as error:
            self.log.error("writing the checkpoint into %s failed: %s", self.results, error)

    async def _round_timer(self, round: int, timeout: float) -> None:
        await asyncio.sleep(timeout)
        await self._execute(self.protocol.round_timed_out(round))

    async def _decrypt(self, action: DecryptTotal) -> None:
        loop = asyncio.get_running_loop()
        started_at = time.time()
        started = time.perf_counter()
        try:
            totals = await loop.run_in_executor(self._executor, lambda: self._open_total(action))
        except CryptoError as error:
            await self._execute(self.protocol.total_invalid(action.round, str(error)))
            return
        self.timer.mark(action.round, "decrypt", started_at, time.perf_counter() - started)
        await self._execute(self.protocol.total_decrypted(action.round, totals))

    def _open_total(self, action: DecryptTotal) -> np.ndarray:
        """Decrypt the round's total, or read it directly when ``crypto.encryption`` is false."""
        length = self.topology.randomiser.payload_length(self.topology.job.features)
        contributors = len(action.contributors)
        if not self.topology.crypto.encryption:
            return open_unencrypted_vector(
                self.public_key,
                self.encoding,
                action.ciphertexts,
                contributors,
                action.round,
                length=length,
            )
        return decrypt_vector(
            self.private_key,
            self.encoding,
            action.ciphertexts,
            contributors,
            action.round,
            length=length,
        )

    def _record(self, action: RoundCompleted) -> None:
        loss = accuracy = None
        scores: dict[str, float] = {}
        if self.eval_data is not None:
            scores = {
                name: float(value)
                for name, value in self.model.evaluate(
                    np.asarray(action.theta), *self.eval_data
                ).items()
            }
            loss = scores.get("loss")
            accuracy = scores.get("accuracy")
        record = RoundRecord(
            round=action.round,
            iteration=action.iteration,
            contributors=list(action.contributors),
            seconds=round(time.monotonic() - self._round_started, 4),
            step=action.step,
            learning_rate=action.learning_rate,
            loss=loss,
            accuracy=accuracy,
            scores=scores,
            scale_total=action.scale_total,
            participants=None if action.participants is None else list(action.participants),
        )
        self.result.history.append(record)
        self.log.info(
            "round %d (iteration %d): %d contributors, %.3f s",
            action.round,
            action.iteration,
            len(action.contributors),
            record.seconds,
        )
        self.timer.record(
            self.run_id,
            action.round,
            completed_at=round(time.time(), 4),
            contributors=len(record.contributors),
        )
        if self.on_round is not None:
            self.on_round(record, self.topology.job.rounds)

    def write_results(self, folder: Path) -> Path:
        """Write ``metrics.json`` and ``model.json`` into ``folder`` atomically."""
        folder.mkdir(parents=True, exist_ok=True)
        metrics_path = folder / "metrics.json"
        write_json_atomically(metrics_path, self.result.metrics())
        write_json_atomically(
            folder / "model.json",
            {
                "job": self.topology.job.id,
                "model": self.topology.job.model,
                "features": self.topology.job.features,
                "theta": self.result.theta,
            },
        )
        return metrics_path


def write_json_atomically(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that a crash never leaves half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)
