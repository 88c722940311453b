"""The daemon of one provider or aggregator node: a thin IO shell around
:class:`~gradchain.protocol.NodeProtocol`.

It holds one MQTT connection, feeds every received message to the protocol,
and carries out the actions the protocol returns. Gradient computation and
Paillier encryption run in a worker thread so the event loop keeps answering
the broker while a contribution is being encrypted.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..crypto import FixedPointEncoding, PublicKey
from ..errors import ProtocolError
from ..models import get_model
from ..protocol import (
    Action,
    ComputeContribution,
    Dropped,
    Finished,
    Liveness,
    NodeConfig,
    NodeProtocol,
    SendContribution,
    Status,
    decode,
    encode,
)
from ..protocol.node import NodeState
from ..protocol.topics import inbox_topic, round_topic, status_topic
from ..topology import Topology, load_provider_data
from .broker import BrokerAddress
from .common import NodeLogger, log_dropped
from .contribution import compute_contribution
from .transport import MqttTransport

logger = logging.getLogger(__name__)


@dataclass
class NodeReport:
    """What a node did, for its exit log line and for tests."""

    node_id: str
    rounds_contributed: int = 0
    values_clipped: int = 0
    messages_dropped: int = 0
    finish_reason: str | None = None
    encrypt_seconds: list[float] = field(default_factory=list)


def node_config(topology: Topology, node_id: str) -> NodeConfig:
    """Build the protocol configuration of ``node_id`` from its topology."""
    spec = topology.nodes[node_id]
    encoding = FixedPointEncoding(frac_bits=topology.crypto.frac_bits, clip=topology.crypto.clip)
    return NodeConfig(
        job=topology.job.id,
        node_id=node_id,
        successor=topology.successor_of(node_id),
        inputs={source: topology.providers_upstream_of(source) for source in topology.inputs_of(node_id)},
        is_provider=spec.data is not None,
        parameters=topology.job.features,
        ciphertext_count=encoding.ciphertext_count(topology.job.features + 1),
        key_bits=topology.crypto.key_bits,
    )


class NodeDaemon:
    """One provider or aggregator process."""

    def __init__(self, topology: Topology, node_id: str, broker: BrokerAddress) -> None:
        if node_id not in topology.nodes:
            raise KeyError(node_id)
        self.topology = topology
        self.node_id = node_id
        self.broker = broker
        self.log = NodeLogger(logger, node_id)
        self.protocol = NodeProtocol(node_config(topology, node_id))
        self.encoding = FixedPointEncoding(frac_bits=topology.crypto.frac_bits, clip=topology.crypto.clip)
        self.model = get_model(topology.job.model)
        self.report = NodeReport(node_id=node_id)
        self.instance = secrets.token_hex(8)
        self._features: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        if topology.nodes[node_id].data is not None:
            self._features, self._labels = load_provider_data(topology, node_id)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gradchain-{node_id}")
        self._tasks: set[asyncio.Task[None]] = set()
        self._transport: MqttTransport | None = None

    def _status(self, state: Liveness) -> bytes:
        return encode(Status(job=self.topology.job.id, node=self.node_id, state=state, instance=self.instance))

    async def run(self) -> NodeReport:
        """Serve rounds until the learner announces that the job is done."""
        job = self.topology.job.id
        transport = MqttTransport(
            self.broker,
            client_id=f"gradchain-{job}-{self.node_id}",
            will_topic=status_topic(job, self.node_id),
            will_payload=self._status(Liveness.OFFLINE),
        )
        try:
            async with transport:
                self._transport = transport
                await transport.subscribe(round_topic(job))
                await transport.subscribe(inbox_topic(job, self.node_id))
                await transport.publish(
                    status_topic(job, self.node_id), self._status(Liveness.ONLINE), retain=True
                )
                role = "provider" if self._features is not None else "aggregator"
                self.log.info("online as %s, sending to %s", role, self.protocol.config.successor)
                async for received in transport.messages():
                    await self._handle(received.topic, received.payload)
                    if self.protocol.state is NodeState.FINISHED:
                        break
                await transport.publish(
                    status_topic(job, self.node_id), self._status(Liveness.OFFLINE), retain=True
                )
        finally:
            for task in self._tasks:
                task.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._transport = None
        self.log.info(
            "stopped after %d contributions (%d values clipped, %d messages dropped): %s",
            self.report.rounds_contributed,
            self.report.values_clipped,
            self.report.messages_dropped,
            self.report.finish_reason,
        )
        return self.report

    async def _handle(self, topic: str, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message
        try:
            message = decode(payload)
            actions = self.protocol.receive(message)
        except ProtocolError as error:
            self.report.messages_dropped += 1
            log_dropped(self.log, topic, error)
            return
        self.log.debug("received %s", message)
        await self._execute(actions)

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, ComputeContribution):
                task = asyncio.create_task(self._contribute(action), name=f"contribute-{self.node_id}-{action.round}")
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
            elif isinstance(action, SendContribution):
                await self._send(action)
            elif isinstance(action, Dropped):
                self.report.messages_dropped += 1
                log_dropped(self.log, "early contribution", action.error)
            elif isinstance(action, Finished):
                self.report.finish_reason = action.reason
                self.log.info("job done: %s", action.reason)
            else:
                self.log.error("the node protocol returned an unexpected action %r", action)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("%s failed: %r", task.get_name(), task.exception())

    async def _contribute(self, action: ComputeContribution) -> None:
        assert self._features is not None and self._labels is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await loop.run_in_executor(
            self._executor,
            lambda: compute_contribution(
                model=self.model,
                features=self._features,  # type: ignore[arg-type]
                labels=self._labels,  # type: ignore[arg-type]
                theta=np.asarray(action.theta, dtype=float),
                public_key=PublicKey(n=action.public_key),
                encoding=self.encoding,
                randomise=self.topology.job.randomise,
            ),
        )
        seconds = loop.time() - started
        self.report.encrypt_seconds.append(seconds)
        self.report.values_clipped += result.clipped
        if result.clipped:
            self.log.warning(
                "round %d: %d gradient values were clipped to +-%g; raise crypto.clip if this repeats",
                action.round,
                result.clipped,
                self.encoding.clip,
            )
        self.log.debug("round %d: contribution encrypted in %.3f s", action.round, seconds)
        try:
            actions = self.protocol.own_contribution_ready(action.round, result.ciphertexts)
        except ProtocolError as error:
            log_dropped(self.log, "own contribution", error)
            return
        self.report.rounds_contributed += 1
        await self._execute(actions)

    async def _send(self, action: SendContribution) -> None:
        assert self._transport is not None and self.protocol.public_key is not None
        payload = encode(action.message, ciphertext_bytes=self.protocol.public_key.ciphertext_bytes)
        await self._transport.publish(inbox_topic(self.topology.job.id, action.to), payload)
        self.log.info(
            "round %d: forwarded the sum of %d contributors to %s",
            action.message.round,
            len(action.message.contributors),
            action.to,
        )
