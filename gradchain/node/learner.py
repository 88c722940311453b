"""The learner daemon: a thin IO shell around :class:`~gradchain.protocol.LearnerProtocol`.

It owns the Paillier private key. It waits until every node of the topology
reports online, opens rounds, decrypts each round's total in a worker thread,
evaluates the model on the held-out data it may hold, and writes the results.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..crypto import (
    FixedPointEncoding,
    PrivateKey,
    PublicKey,
    decrypt_vector,
    generate_keypair,
    load_private_key,
    save_private_key,
    save_public_key,
)
from ..errors import CryptoError, ProtocolError, TransportError
from ..models import get_model
from ..models.training import StepSchedule
from ..protocol import (
    Action,
    Contribution,
    DecryptTotal,
    Finished,
    LearnerConfig,
    LearnerProtocol,
    Liveness,
    PublishRound,
    RoundCompleted,
    RoundFailed,
    RoundStart,
    Status,
    decode,
    encode,
)
from ..protocol.topics import inbox_topic, round_topic, status_topic, status_wildcard
from ..topology import Topology, load_eval_data
from .broker import BrokerAddress
from .common import NodeLogger, log_dropped
from .transport import MqttTransport

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
            "seconds": round(self.seconds, 3),
            "key_bits": self.key_bits,
            "key_fingerprint": self.key_fingerprint,
            "contributors": [record.contributors for record in self.history],
            "history": [asdict(record) for record in self.history],
            "failed_rounds": self.failed_rounds,
            "theta": self.theta,
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
    log.info("generating a %d-bit Paillier key pair", topology.crypto.key_bits)
    public, private = generate_keypair(topology.crypto.key_bits)
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
    encoding = FixedPointEncoding(frac_bits=topology.crypto.frac_bits, clip=topology.crypto.clip)
    return LearnerConfig(
        job=job.id,
        learner_id=learner_id,
        inputs={source: topology.providers_upstream_of(source) for source in topology.inputs_of(learner_id)},
        min_contributors=job.min_contributors,
        parameters=job.features,
        ciphertext_count=encoding.ciphertext_count(job.features + 1),
        randomise=job.randomise,
        schedule=StepSchedule(kind=job.schedule, learning_rate=job.learning_rate),
        l2=job.l2,
        max_rounds=job.rounds,
        tolerance=job.tolerance,
        round_timeout=job.round_timeout,
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
    ) -> None:
        self.topology = topology
        self.broker = broker
        self.results = results
        self.startup_timeout = startup_timeout
        self.on_round = on_round
        self.log = NodeLogger(logger, topology.learner.id)
        self.private_key = load_or_create_keys(topology, self.log)
        self.public_key: PublicKey = self.private_key.public_key
        self.encoding = FixedPointEncoding(frac_bits=topology.crypto.frac_bits, clip=topology.crypto.clip)
        self.model = get_model(topology.job.model)
        self.eval_data = load_eval_data(topology)
        self.run_id = secrets.token_hex(8)
        self.protocol = LearnerProtocol(
            learner_config(topology),
            run=self.run_id,
            public_key=self.public_key,
            theta=np.zeros(topology.job.features),
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
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradchain-learner")
        self._transport: MqttTransport | None = None
        self._timer: asyncio.Task[None] | None = None
        self._round_started = 0.0

    async def run(self) -> LearnerResult:
        """Wait for every node, train until the protocol stops, and write the results."""
        job = self.topology.job.id
        started = time.monotonic()
        transport = MqttTransport(
            self.broker,
            client_id=f"gradchain-{job}-{self.topology.learner.id}",
            will_topic=status_topic(job, self.topology.learner.id),
            will_payload=encode(
                Status(job=job, node=self.topology.learner.id, state=Liveness.OFFLINE, instance=self.run_id)
            ),
        )
        async with transport:
            self._transport = transport
            await transport.subscribe(status_wildcard(job))
            await transport.subscribe(inbox_topic(job, self.topology.learner.id))
            reader = asyncio.create_task(self._read(transport), name="learner-reader")
            try:
                await self._wait_or_fail(self._all_online, reader, self.startup_timeout, self._startup_error)
                self.log.info("all %d nodes are online; starting run %s", len(self.topology.nodes), self.run_id)
                await self._execute(self.protocol.start())
                await self._wait_or_fail(self._finished, reader, None, None)
            finally:
                reader.cancel()
                if self._timer is not None:
                    self._timer.cancel()
                self._executor.shutdown(wait=False, cancel_futures=True)
            self._transport = None
        self.result.seconds = time.monotonic() - started
        self.result.theta = [float(x) for x in self.protocol.theta]
        if self.results is not None:
            self.write_results(self.results)
        return self.result

    async def _wait_or_fail(
        self,
        event: asyncio.Event,
        reader: asyncio.Task[None],
        timeout: float | None,
        on_timeout: Callable[[], Exception] | None,
    ) -> None:
        waiter = asyncio.create_task(event.wait())
        done, _ = await asyncio.wait({waiter, reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            return
        waiter.cancel()
        if reader in done:
            reader.result()  # re-raises the reader's error
            raise TransportError(f"the connection to {self.broker.url} closed before the job finished")
        assert on_timeout is not None
        raise on_timeout()

    def _startup_error(self) -> Exception:
        missing = sorted(set(self.topology.nodes) - set(self.online))
        return TransportError(
            f"nodes {missing} did not come online within {self.startup_timeout:g} s; start each with "
            f"`gradchain node --id ID {self.topology.path} --broker {self.broker.url}`"
        )

    async def _read(self, transport: MqttTransport) -> None:
        async for received in transport.messages():
            if not received.payload:
                continue
            try:
                message = decode(received.payload)
                if isinstance(message, Status):
                    self._note_status(message)
                    continue
                if isinstance(message, Contribution):
                    self.log.debug("received %s", message)
                actions = self.protocol.receive(message)
            except ProtocolError as error:
                log_dropped(self.log, received.topic, error)
                continue
            await self._execute(actions)

    def _note_status(self, status: Status) -> None:
        if status.job != self.topology.job.id or status.node not in self.topology.nodes:
            return
        if status.state is Liveness.ONLINE:
            self.online[status.node] = status.instance
        else:
            self.online.pop(status.node, None)
            if self._all_online.is_set():
                self.log.warning("node %s went offline", status.node)
        if set(self.online) == set(self.topology.nodes):
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
                self.log.warning("round %d failed and will be repeated: %s", action.round, action.reason)
                self.result.failed_rounds.append({"round": action.round, "reason": action.reason})
            elif isinstance(action, Finished):
                self.result.reason = action.reason
                self.result.succeeded = action.succeeded
                self.log.info("finished: %s", action.reason)
                self._finished.set()
            else:
                self.log.error("the learner protocol returned an unexpected action %r", action)

    async def _publish_round(self, action: PublishRound) -> None:
        assert self._transport is not None
        message = action.message
        await self._transport.publish(round_topic(self.topology.job.id), encode(message), retain=True)
        if isinstance(message, RoundStart):
            self._round_started = time.monotonic()
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.create_task(self._round_timer(message.round, message.timeout))
            self.log.debug("published %s", message)

    async def _round_timer(self, round: int, timeout: float) -> None:
        await asyncio.sleep(timeout)
        await self._execute(self.protocol.round_timed_out(round))

    async def _decrypt(self, action: DecryptTotal) -> None:
        loop = asyncio.get_running_loop()
        try:
            totals = await loop.run_in_executor(
                self._executor,
                lambda: decrypt_vector(
                    self.private_key, self.encoding, action.ciphertexts, len(action.contributors), action.round
                ),
            )
        except CryptoError as error:
            await self._execute(self.protocol.total_invalid(action.round, str(error)))
            return
        await self._execute(self.protocol.total_decrypted(action.round, totals))

    def _record(self, action: RoundCompleted) -> None:
        loss = accuracy = None
        if self.eval_data is not None:
            scores = self.model.evaluate(np.asarray(action.theta), *self.eval_data)
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
        )
        self.result.history.append(record)
        self.log.info(
            "round %d (iteration %d): %d contributors, %.3f s", action.round, action.iteration,
            len(action.contributors), record.seconds,
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
