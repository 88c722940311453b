"""Tests for gradchain.node.liveness and gradchain.node.connection against real brokers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gradchain.errors import DuplicateNodeError, SignatureError, TransportError
from gradchain.node.backoff import Backoff
from gradchain.node.broker import BrokerAddress, MosquittoBroker, find_free_port
from gradchain.node.common import NodeLogger
from gradchain.node.connection import Connection
from gradchain.node.eventlog import EventLog, read_events
from gradchain.node.liveness import ensure_not_running
from gradchain.node.transport import MqttTransport, Received
from gradchain.protocol import Liveness, Status, decode, encode
from gradchain.protocol.signing import MessageSigning
from gradchain.protocol.topics import status_topic

JOB = "job-1"
INSTANCE = "0123abcd0123abcd"
FAST = Backoff(initial=0.05, maximum=0.2)


@pytest.fixture(params=["embedded", "mosquitto"])
def broker(request: pytest.FixtureRequest) -> BrokerAddress:
    if request.param == "mosquitto":
        handle: MosquittoBroker = request.getfixturevalue("mosquitto")
        return handle.address
    address: BrokerAddress = request.getfixturevalue("embedded")
    return address


@asynccontextmanager
async def client(address: BrokerAddress) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        address.host, address.port, protocol=aiomqtt.ProtocolVersion.V311
    ) as mqtt:
        yield mqtt


async def retain_status(address: BrokerAddress, node: str, state: Liveness) -> None:
    async with client(address) as mqtt:
        payload = encode(Status(job=JOB, node=node, state=state, instance=INSTANCE))
        await mqtt.publish(status_topic(JOB, node), payload, qos=1, retain=True)


# Refusing a node id that is already online


async def test_node_without_status_may_start(broker: BrokerAddress, time_unit: float) -> None:
    await ensure_not_running(broker, JOB, "p1", offline_wait=0.1, connect_timeout=10 * time_unit)


async def test_node_with_offline_status_may_start(broker: BrokerAddress, time_unit: float) -> None:
    await retain_status(broker, "p1", Liveness.OFFLINE)

    await ensure_not_running(broker, JOB, "p1", offline_wait=0.1, connect_timeout=10 * time_unit)


async def test_online_node_id_refused(broker: BrokerAddress, time_unit: float) -> None:
    await retain_status(broker, "p1", Liveness.ONLINE)

    with pytest.raises(DuplicateNodeError) as caught:
        await ensure_not_running(
            broker, JOB, "p1", offline_wait=0.2, connect_timeout=10 * time_unit
        )

    message = str(caught.value)
    assert "node 'p1' of job 'job-1' is already online" in message
    assert INSTANCE in message
    assert "--id" in message


async def test_status_of_other_node_ignored(broker: BrokerAddress, time_unit: float) -> None:
    await retain_status(broker, "p2", Liveness.ONLINE)

    await ensure_not_running(broker, JOB, "p1", offline_wait=0.1, connect_timeout=10 * time_unit)


async def test_crashed_node_offline_allows_start(
    mosquitto: MosquittoBroker, time_unit: float
) -> None:
    await retain_status(mosquitto.address, "p1", Liveness.ONLINE)
    check = asyncio.create_task(
        ensure_not_running(
            mosquitto.address,
            JOB,
            "p1",
            offline_wait=10 * time_unit,
            connect_timeout=10 * time_unit,
        )
    )
    async with client(mosquitto.address) as mqtt:
        await mqtt.subscribe(f"gradchain/{JOB}/probe/#", qos=1)
        await anext(aiter(mqtt.messages))  # the check's marker: it has read the online status

    await retain_status(mosquitto.address, "p1", Liveness.OFFLINE)

    async with asyncio.timeout(10 * time_unit):
        await check


async def test_unreachable_broker_is_transport_error() -> None:
    closed = BrokerAddress(host="127.0.0.1", port=find_free_port())

    with pytest.raises(TransportError, match="cannot read the status"):
        await ensure_not_running(closed, JOB, "p1", offline_wait=0.1, connect_timeout=5)


# Reconnecting


def connection(
    address: BrokerAddress, events: EventLog, *, node: str = "p1", **options: object
) -> Connection:
    return Connection(
        address,
        job=JOB,
        node_id=node,
        instance=INSTANCE,
        subscriptions=(f"gradchain/{JOB}/inbox/{node}",),
        log=NodeLogger(logging.getLogger("test"), node),
        events=events,
        offline_wait=0.2,
        **{"backoff": FAST, **options},  # type: ignore[arg-type]
    )


class Connections:
    """Counts the connections of a Connection through its on_connected callback."""

    def __init__(self, link: Connection) -> None:
        self.link = link
        self.queue: asyncio.Queue[int] = asyncio.Queue()

    async def on_connected(self) -> None:
        self.queue.put_nowait(self.link.connections)

    async def wait_for(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while await self.queue.get() < count:
                pass


async def ignore(message: Received) -> None:
    return None


async def test_connection_survives_broker_restart(
    mosquitto: MosquittoBroker, tmp_path: Path, time_unit: float
) -> None:
    events = EventLog(tmp_path, "p1")
    link = connection(mosquitto.address, events)
    received: list[bytes] = []
    arrived = asyncio.Event()

    async def handle(message: Received) -> None:
        received.append(message.payload)
        arrived.set()

    stopped = asyncio.Event()
    connections = Connections(link)
    running = asyncio.create_task(link.run(handle, stopped, on_connected=connections.on_connected))
    try:
        await connections.wait_for(1, 10 * time_unit)
        assert await link.publish(f"gradchain/{JOB}/inbox/p1", b"before")
        async with asyncio.timeout(10 * time_unit):
            await arrived.wait()

        await mosquitto.kill()
        assert not await link.publish(f"gradchain/{JOB}/inbox/p1", b"while down")
        await mosquitto.start()
        await connections.wait_for(2, 20 * time_unit)
        arrived.clear()
        assert await link.publish(f"gradchain/{JOB}/inbox/p1", b"after")
        async with asyncio.timeout(10 * time_unit):
            await arrived.wait()

        async with client(mosquitto.address) as mqtt:
            await mqtt.subscribe(status_topic(JOB, "p1"), qos=1)
            status = decode((await anext(aiter(mqtt.messages))).payload)  # type: ignore[arg-type]
    finally:
        stopped.set()
        await running
        events.close()

    assert received == [b"before", b"after"]
    assert isinstance(status, Status)
    assert status.state is Liveness.ONLINE
    names = [entry["event"] for entry in read_events(tmp_path / "p1.jsonl")]
    assert "connection_lost" in names
    assert names[-1] == "reconnected"


async def test_stopped_connection_publishes_offline(
    mosquitto: MosquittoBroker, time_unit: float
) -> None:
    link = connection(mosquitto.address, EventLog(None, "p1"))
    stopped = asyncio.Event()
    connections = Connections(link)

    running = asyncio.create_task(link.run(ignore, stopped, on_connected=connections.on_connected))
    await connections.wait_for(1, 10 * time_unit)
    stopped.set()
    await running

    async with client(mosquitto.address) as mqtt:
        await mqtt.subscribe(status_topic(JOB, "p1"), qos=1)
        status = decode((await anext(aiter(mqtt.messages))).payload)  # type: ignore[arg-type]
    assert isinstance(status, Status)
    assert status.state is Liveness.OFFLINE


async def test_connection_refuses_id_already_online(
    mosquitto: MosquittoBroker, time_unit: float
) -> None:
    await retain_status(mosquitto.address, "p1", Liveness.ONLINE)
    link = connection(mosquitto.address, EventLog(None, "p1"))

    with pytest.raises(DuplicateNodeError):
        async with asyncio.timeout(10 * time_unit):
            await link.run(ignore, asyncio.Event())
    assert link.connections == 0


async def test_connection_gives_up_on_missing_broker(time_unit: float) -> None:
    closed = BrokerAddress(host="127.0.0.1", port=find_free_port())
    link = connection(closed, EventLog(None, "p1"), first_connect_timeout=0.3)

    with pytest.raises(TransportError, match="cannot read the status"):
        async with asyncio.timeout(10 * time_unit):
            await link.run(ignore, asyncio.Event())


# Signed status and last will


def status_signing(node: str, key: Ed25519PrivateKey) -> MessageSigning:
    return MessageSigning(
        own_id=node,
        learner_id="learner",
        private_key=key,
        public_keys={node: key.public_key()},
        required=True,
    )


async def test_last_will_is_signed(mosquitto: MosquittoBroker, time_unit: float) -> None:
    key = Ed25519PrivateKey.generate()
    transports: list[MqttTransport] = []

    def keep(inner: MqttTransport) -> MqttTransport:
        transports.append(inner)
        return inner

    link = connection(
        mosquitto.address,
        EventLog(None, "p1"),
        signing=status_signing("p1", key),
        wrap=keep,
        # Long enough that the will arrives before the connection comes back online.
        backoff=Backoff(initial=30.0, maximum=30.0, jitter=0.0),
    )
    stopped = asyncio.Event()
    connections = Connections(link)
    running = asyncio.create_task(link.run(ignore, stopped, on_connected=connections.on_connected))
    try:
        await connections.wait_for(1, 10 * time_unit)
        async with client(mosquitto.address) as mqtt:
            await mqtt.subscribe(status_topic(JOB, "p1"), qos=1)
            messages = aiter(mqtt.messages)
            online = (await anext(messages)).payload
            transports[0].abort()
            async with asyncio.timeout(10 * time_unit):
                will = (await anext(messages)).payload
    finally:
        stopped.set()
        await running

    receiver = status_signing("learner", Ed25519PrivateKey.generate())
    receiver = replace(receiver, public_keys={"p1": key.public_key()})
    assert isinstance(online, bytes) and isinstance(will, bytes)
    assert receiver.open(online) == Status(
        job=JOB, node="p1", state=Liveness.ONLINE, instance=INSTANCE
    )
    assert receiver.open(will) == Status(
        job=JOB, node="p1", state=Liveness.OFFLINE, instance=INSTANCE
    )
    with pytest.raises(SignatureError, match="requires signed messages"):
        receiver.open(encode(Status(job=JOB, node="p1", state=Liveness.OFFLINE, instance=INSTANCE)))


async def test_forged_online_status_ignored(broker: BrokerAddress, time_unit: float) -> None:
    # An unsigned online status in p1's name, as any broker client can publish.
    await retain_status(broker, "p1", Liveness.ONLINE)
    key = Ed25519PrivateKey.generate()

    await ensure_not_running(
        broker,
        JOB,
        "p1",
        offline_wait=0.2,
        connect_timeout=10 * time_unit,
        signing=status_signing("p1", key),
    )


async def test_signed_online_status_refused(broker: BrokerAddress, time_unit: float) -> None:
    key = Ed25519PrivateKey.generate()
    signing = status_signing("p1", key)
    async with client(broker) as mqtt:
        payload = signing.sign(
            encode(Status(job=JOB, node="p1", state=Liveness.ONLINE, instance=INSTANCE))
        )
        await mqtt.publish(status_topic(JOB, "p1"), payload, qos=1, retain=True)

    with pytest.raises(DuplicateNodeError, match="already online"):
        await ensure_not_running(
            broker,
            JOB,
            "p1",
            offline_wait=0.2,
            connect_timeout=10 * time_unit,
            signing=signing,
        )
