"""Tests for gradchain.node.broker: both brokers seen through aiomqtt clients, and URL parsing."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from pathlib import Path

import aiomqtt
import pytest

from gradchain.errors import ConfigError, TransportError
from gradchain.node.broker import (
    BrokerAddress,
    MosquittoBroker,
    _SnapshotIterationDict,
    embedded_broker,
    find_free_port,
    mosquitto_broker,
    parse_broker_url,
)

ONE_MIB = 1 << 20


@pytest.fixture(params=["embedded", "mosquitto"])
def broker(request: pytest.FixtureRequest) -> BrokerAddress:
    """Address of each broker in turn: amqtt in the event loop, then a mosquitto process."""
    if request.param == "mosquitto":
        handle: MosquittoBroker = request.getfixturevalue("mosquitto")
        return handle.address
    address: BrokerAddress = request.getfixturevalue("embedded")
    return address


def mqtt_client(address: BrokerAddress, identifier: str | None = None) -> aiomqtt.Client:
    return aiomqtt.Client(
        address.host,
        address.port,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V311,
    )


async def next_message(client: aiomqtt.Client, timeout: float) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        return await anext(aiter(client.messages))


def connect_packet_with_will(client_id: str, will_topic: str, will_payload: bytes) -> bytes:
    """Build an MQTT 3.1.1 CONNECT packet with clean session and a QoS 1 last will."""

    def length_prefixed(data: bytes) -> bytes:
        return struct.pack("!H", len(data)) + data

    clean_session, will_flag, will_qos_1 = 0x02, 0x04, 0x08
    keep_alive_seconds = 60
    variable_header = (
        length_prefixed(b"MQTT")
        + bytes([4, clean_session | will_flag | will_qos_1])
        + struct.pack("!H", keep_alive_seconds)
    )
    payload = (
        length_prefixed(client_id.encode())
        + length_prefixed(will_topic.encode())
        + length_prefixed(will_payload)
    )
    body = variable_header + payload
    assert len(body) < 128, "the remaining length must fit in one byte"
    return bytes([0x10, len(body)]) + body


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"round 1 total", id="short"),
        pytest.param(bytes(range(256)) * (ONE_MIB // 256), id="1-mib"),
    ],
)
async def test_publish_reaches_subscriber(
    broker: BrokerAddress, time_unit: float, payload: bytes
) -> None:
    async with mqtt_client(broker) as subscriber, mqtt_client(broker) as publisher:
        await subscriber.subscribe("jobs/demo/+/sum", qos=1)
        await publisher.publish("jobs/demo/p1/sum", payload, qos=1)

        message = await next_message(subscriber, timeout=10 * time_unit)

    assert message.topic.value == "jobs/demo/p1/sum"
    assert message.payload == payload
    assert message.qos == 1
    assert message.retain is False


async def test_retained_message_reaches_late_subscriber(
    broker: BrokerAddress, time_unit: float
) -> None:
    async with mqtt_client(broker) as publisher:
        await publisher.publish("jobs/demo/status/p1", b"online", qos=1, retain=True)

    async with mqtt_client(broker) as late_subscriber:
        await late_subscriber.subscribe("jobs/demo/status/+", qos=1)
        message = await next_message(late_subscriber, timeout=5 * time_unit)

    assert message.topic.value == "jobs/demo/status/p1"
    assert message.payload == b"online"
    assert message.retain is True


async def test_empty_retained_message_clears_topic(broker: BrokerAddress, time_unit: float) -> None:
    async with mqtt_client(broker) as publisher:
        await publisher.publish("jobs/demo/status/p1", b"online", qos=1, retain=True)
        await publisher.publish("jobs/demo/status/p1", b"", qos=1, retain=True)
        await publisher.publish("jobs/demo/status/p2", b"online", qos=1, retain=True)

    async with mqtt_client(broker) as late_subscriber:
        await late_subscriber.subscribe("jobs/demo/status/+", qos=1)
        first = await next_message(late_subscriber, timeout=5 * time_unit)

    assert first.topic.value == "jobs/demo/status/p2"


async def test_last_will_sent_when_socket_dropped(broker: BrokerAddress, time_unit: float) -> None:
    async with mqtt_client(broker) as watcher:
        await watcher.subscribe("jobs/demo/status/+", qos=1)

        reader, writer = await asyncio.open_connection(broker.host, broker.port)
        writer.write(connect_packet_with_will("p1", "jobs/demo/status/p1", b"offline"))
        await writer.drain()
        async with asyncio.timeout(5 * time_unit):
            connack = await reader.readexactly(4)
        assert connack == b"\x20\x02\x00\x00", "the broker must accept the CONNECT"

        # Close the socket without sending DISCONNECT, as a crashed node would.
        writer.transport.abort()
        message = await next_message(watcher, timeout=5 * time_unit)

    assert message.topic.value == "jobs/demo/status/p1"
    assert message.payload == b"offline"
    assert message.qos == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "mqtt://127.0.0.1:1883", BrokerAddress(host="127.0.0.1", port=1883), id="ip-and-port"
        ),
        pytest.param(
            "mqtt://127.0.0.1", BrokerAddress(host="127.0.0.1", port=1883), id="default-port"
        ),
        pytest.param(
            "mqtt://127.0.0.1/", BrokerAddress(host="127.0.0.1", port=1883), id="trailing-slash"
        ),
        pytest.param(
            "mqtt://broker.example:18830",
            BrokerAddress(host="broker.example", port=18830),
            id="hostname",
        ),
        pytest.param("mqtt://[::1]:1884", BrokerAddress(host="::1", port=1884), id="ipv6"),
        pytest.param(
            "MQTT://LocalHost:65535", BrokerAddress(host="localhost", port=65535), id="upper-case"
        ),
    ],
)
def test_parse_broker_url_accepts(url: str, expected: BrokerAddress) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("", id="empty"),
        pytest.param("127.0.0.1:1883", id="no-scheme"),
        pytest.param("tcp://127.0.0.1:1883", id="tcp-scheme"),
        pytest.param("mqtts://127.0.0.1:8883", id="tls-scheme"),
        pytest.param("ws://127.0.0.1:9001", id="websocket-scheme"),
        pytest.param("mqtt://", id="no-host"),
        pytest.param("mqtt://:1883", id="port-without-host"),
        pytest.param("mqtt://127.0.0.1:", id="empty-port"),
        pytest.param("mqtt://127.0.0.1:abc", id="non-numeric-port"),
        pytest.param("mqtt://127.0.0.1:0", id="port-zero"),
        pytest.param("mqtt://127.0.0.1:65536", id="port-too-large"),
        pytest.param("mqtt://user:secret@127.0.0.1:1883", id="credentials"),
        pytest.param("mqtt://127.0.0.1:1883/jobs", id="path"),
        pytest.param("mqtt://127.0.0.1:1883?qos=1", id="query"),
        pytest.param("mqtt://127.0.0.1:1883#x", id="fragment"),
        pytest.param("mqtt://[::1:1883", id="unclosed-ipv6-bracket"),
        pytest.param(" mqtt://127.0.0.1:1883", id="leading-space"),
    ],
)
def test_parse_broker_url_rejects(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_broker_url(url)

    message = str(raised.value)
    assert repr(url) in message
    assert "mqtt://HOST[:PORT]" in message


@pytest.mark.parametrize(
    ("address", "url"),
    [
        pytest.param(
            BrokerAddress(host="127.0.0.1", port=1883), "mqtt://127.0.0.1:1883", id="ipv4"
        ),
        pytest.param(BrokerAddress(host="::1", port=1884), "mqtt://[::1]:1884", id="ipv6"),
    ],
)
def test_broker_address_url_parses_back(address: BrokerAddress, url: str) -> None:
    assert address.url == url
    assert parse_broker_url(address.url) == address


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("0.0.0.0", id="all-interfaces"),
        pytest.param("192.0.2.10", id="non-loopback-ipv4"),
        pytest.param("localhost", id="hostname"),
        pytest.param("::1", id="ipv6-loopback"),
    ],
)
async def test_embedded_broker_rejects_host(host: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        async with embedded_broker(host=host):
            pass


async def test_embedded_broker_uses_requested_port(time_unit: float) -> None:
    port = find_free_port()

    async with embedded_broker(port=port) as address:
        assert address == BrokerAddress(host="127.0.0.1", port=port)
        assert address.url == f"mqtt://127.0.0.1:{port}"
        async with mqtt_client(address) as client:
            await client.subscribe("jobs/demo/ping", qos=1)
            await client.publish("jobs/demo/ping", b"ping", qos=1)
            message = await next_message(client, timeout=5 * time_unit)

    assert message.payload == b"ping"


async def test_embedded_broker_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        port = occupant.getsockname()[1]

        with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
            async with embedded_broker(port=port):
                pass


async def test_mosquitto_config_loopback_without_persistence(mosquitto: MosquittoBroker) -> None:
    lines = mosquitto.config_path.read_text().splitlines()

    assert f"listener {mosquitto.address.port} 127.0.0.1" in lines
    assert "allow_anonymous true" in lines
    assert "persistence false" in lines
    assert "max_queued_messages 10000" in lines


@pytest.mark.parametrize(
    "end", [pytest.param("stop", id="sigterm"), pytest.param("kill", id="sigkill")]
)
async def test_mosquitto_restarts_on_same_port(
    mosquitto: MosquittoBroker, time_unit: float, end: str
) -> None:
    address = mosquitto.address

    async with mqtt_client(address) as client:
        await client.subscribe("jobs/demo/ping", qos=1)
        await getattr(mosquitto, end)()
        assert not mosquitto.running
        with pytest.raises(aiomqtt.MqttError):
            await next_message(client, timeout=5 * time_unit)

    await mosquitto.start()

    assert mosquitto.running
    assert mosquitto.address == address
    async with mqtt_client(address) as client:
        await client.subscribe("jobs/demo/ping", qos=1)
        await client.publish("jobs/demo/ping", b"ping", qos=1)
        message = await next_message(client, timeout=5 * time_unit)
    assert message.payload == b"ping"


async def test_mosquitto_early_exit_names_port_and_log() -> None:
    with pytest.raises(TransportError) as raised:
        async with mosquitto_broker(executable="/bin/false"):
            pass

    message = str(raised.value)
    assert "exited with code 1" in message
    assert "127.0.0.1:" in message
    assert "mosquitto.log" in message


async def test_mosquitto_start_timeout_kills_process(tmp_path: Path, time_unit: float) -> None:
    pid_file = tmp_path / "pid"
    silent_server = tmp_path / "silent-server"
    silent_server.write_text(f'#!/bin/sh\necho $$ > "{pid_file}"\nexec sleep 60\n')
    silent_server.chmod(0o755)

    with pytest.raises(TransportError, match="Timed out after"):
        async with mosquitto_broker(executable=str(silent_server), start_timeout=1.0 * time_unit):
            pass

    assert pid_file.exists(), "the script must have started before the timeout"
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_mosquitto_missing_executable(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-mosquitto"

    with pytest.raises(TransportError, match="no-such-mosquitto"):
        async with mosquitto_broker(executable=str(missing)):
            pass


async def test_embedded_broker_many_clients_connect_at_once(time_unit: float) -> None:
    # Twenty clients connect, subscribe and publish retained statuses at the
    # same moment, as the nodes of `gradchain run` do at startup.
    async with embedded_broker() as address, aiomqtt.Client(
        address.host, address.port, protocol=aiomqtt.ProtocolVersion.V311
    ) as first:
        await first.subscribe("job/round", qos=1)
        await first.subscribe("job/status/+", qos=1)
        await first.publish("job/round", b"retained", qos=1, retain=True)
        for index in range(20):
            await first.publish(f"job/status/{index}", b"online", qos=1, retain=True)

        async def join(index: int) -> bytes:
            async with aiomqtt.Client(
                address.host,
                address.port,
                identifier=f"client-{index}",
                protocol=aiomqtt.ProtocolVersion.V311,
                timeout=10 * time_unit,
            ) as client:
                await client.subscribe(f"job/inbox/{index}", qos=1)
                await client.subscribe("job/round", qos=1)
                await client.publish(f"job/status/{index}", b"online", qos=1, retain=True)
                async for message in client.messages:
                    if message.topic.matches("job/round"):
                        assert isinstance(message.payload, bytes)
                        return message.payload
            raise AssertionError("connection closed before the retained message arrived")

        payloads = await asyncio.wait_for(
            asyncio.gather(*(join(i) for i in range(20))), 30 * time_unit
        )

    assert payloads == [b"retained"] * 20


def test_subscription_table_iterates_over_a_snapshot() -> None:
    # amqtt walks its subscription table with awaits inside the loop; a
    # subscription added meanwhile must not break the walk.
    table = _SnapshotIterationDict({"a/#": [], "b/#": []})
    walked = []
    for topic in table:
        walked.append(topic)
        table[f"{topic}/more"] = []

    assert walked == ["a/#", "b/#"]
    assert len(table) == 4
