"""The MQTT connection of one daemon.

:class:`MqttTransport` is the only place that talks to aiomqtt. It is also
the seam where tests and fault plans can intercept what a node publishes and
receives, without patching the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import aiomqtt

from ..errors import TransportError
from .broker import BrokerAddress

logger = logging.getLogger(__name__)

#: Default upper bound for one published payload, in bytes. Mosquitto's own
#: default limit is 256 MiB; keeping ours lower catches a runaway message early.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Received:
    """One MQTT message as the daemon sees it."""

    topic: str
    payload: bytes
    retain: bool


class Transport(Protocol):
    """What a daemon needs of one broker connection: :class:`MqttTransport` or a wrapper around it."""

    client_id: str

    async def __aenter__(self) -> Transport: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def subscribe(self, topic: str) -> None: ...

    async def unsubscribe(self, topic: str) -> None: ...

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...

    def messages(self) -> AsyncIterator[Received]: ...

    def abort(self) -> None: ...


class MqttTransport:
    """One MQTT 3.1.1 connection with a last will, used as an async context manager.

    Each instance connects once. After the connection is lost, the daemon
    builds a new instance to reconnect.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        client_id: str,
        will_topic: str | None = None,
        will_payload: bytes | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        keepalive: int = 30,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.max_payload_bytes = max_payload_bytes
        self._subscriptions: list[str] = []
        will = None
        if will_topic is not None:
            will = aiomqtt.Will(topic=will_topic, payload=will_payload, qos=1, retain=True)
        self._client = aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            will=will,
            clean_session=True,
            keepalive=keepalive,
            timeout=30,
        )

    async def __aenter__(self) -> MqttTransport:
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise TransportError(
                f"cannot connect to the MQTT broker at {self.broker.url}: {exc} "
                "(check that the broker runs and the address is right)"
            ) from exc
        logger.debug("%s connected to %s", self.client_id, self.broker.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self._client.__aexit__(exc_type, exc, traceback)
        except aiomqtt.MqttError as error:
            logger.warning("%s: disconnecting from %s failed: %s", self.client_id, self.broker.url, error)

    async def subscribe(self, topic: str) -> None:
        try:
            await self._client.subscribe(topic, qos=1)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"subscribing to {topic} failed: {exc}") from exc
        self._subscriptions.append(topic)

    async def unsubscribe(self, topic: str) -> None:
        try:
            await self._client.unsubscribe(topic)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"unsubscribing from {topic} failed: {exc}") from exc
        if topic in self._subscriptions:
            self._subscriptions.remove(topic)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish with QoS 1 after checking the payload size.

        Raises TransportError as soon as the connection is lost, instead of
        waiting out aiomqtt's timeout for a PUBACK that cannot come.
        """
        if len(payload) > self.max_payload_bytes:
            raise TransportError(
                f"message for {topic} is {len(payload)} bytes, above the limit of "
                f"{self.max_payload_bytes} bytes; use a smaller model or enable packing"
            )
        publishing = asyncio.ensure_future(self._client.publish(topic, payload, qos=1, retain=retain))
        # NOTE: aiomqtt 2.5 offers no public way to wait for a disconnection,
        # so this waits on its private Client._disconnected future.
        disconnected = self._client._disconnected
        try:
            await asyncio.wait({publishing, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            publishing.cancel()
            raise
        if not publishing.done():
            publishing.cancel()
            raise TransportError(f"publishing to {topic} failed: the connection to {self.broker.url} was lost")
        try:
            publishing.result()
        except aiomqtt.MqttError as exc:
            raise TransportError(f"publishing to {topic} failed: {exc}") from exc

    def abort(self) -> None:
        """Drop the TCP connection without an MQTT DISCONNECT, as a crash or a lost link would.

        The broker then publishes the last will, and :meth:`messages` raises
        TransportError. Does nothing when there is no open socket.
        """
        # NOTE: aiomqtt 2.5 has no abort; this shuts down the socket of its paho client.
        sock = self._client._client.socket()
        if not isinstance(sock, socket.socket):
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    async def messages(self) -> AsyncIterator[Received]:
        """Yield incoming messages until the connection closes."""
        try:
            async for message in self._client.messages:
                # amqtt 0.12 sends a new client the retained messages of every
                # subscription any client holds, so filter by our own.
                if not any(message.topic.matches(topic) for topic in self._subscriptions):
                    continue
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    payload = b"" if payload is None else str(payload).encode()
                yield Received(topic=message.topic.value, payload=bytes(payload), retain=message.retain)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"connection to {self.broker.url} lost: {exc}") from exc
