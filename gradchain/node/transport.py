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
import struct
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeVar

import aiomqtt

from ..errors import TransportError
from .broker import BrokerAddress

logger = logging.getLogger(__name__)

#: Default upper bound for one published payload, in bytes. Mosquitto's own
#: default limit is 256 MiB; keeping ours lower catches a runaway message early.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024

#: Seconds between checks that the broker has not closed the socket.
SOCKET_CHECK_INTERVAL = 1.0

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Received:
    """One MQTT message as the transport passes it to the daemon."""

    topic: str
    payload: bytes
    retain: bool


class Transport(Protocol):
    """Interface of the broker connection a daemon uses: :class:`MqttTransport` or a wrapper around it."""

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


def _unread_bytes(sock: socket.socket) -> int:
    """Return the number of received bytes waiting in ``sock``, or 0 where the platform cannot report it."""
    try:
        import fcntl
        import termios
    except ImportError:  # Windows
        return 0
    try:
        answer = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", answer)[0])


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
        #: Set when the socket watch finds the connection closed.
        self._lost = asyncio.Event()
        self._socket_watch: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MqttTransport:
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise TransportError(
                f"cannot connect to the MQTT broker at {self.broker.url}: {exc} "
                "(check that the broker runs and the address is right)"
            ) from exc
        self._disable_nagle()
        self._socket_watch = asyncio.create_task(
            self._watch_socket(), name=f"{self.client_id}-socket-watch"
        )
        logger.debug("%s connected to %s", self.client_id, self.broker.url)
        return self

    def _disable_nagle(self) -> None:
        """Send small MQTT packets at once instead of holding them for Nagle's algorithm.

        Without TCP_NODELAY, a PUBLISH written right after a PUBACK waits for
        the broker's delayed TCP acknowledgement, about 40 ms on Linux, at
        every hop (measured with ``gradchain bench``).
        """
        # NOTE: aiomqtt 2.5 does not expose the socket; this reaches into its paho client, as abort() does.
        sock = self._client._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._socket_watch is not None:
            self._socket_watch.cancel()
        if self._lost.is_set():
            self._close_lost_connection()
        try:
            await self._client.__aexit__(exc_type, exc, traceback)
        except aiomqtt.MqttError as error:
            logger.warning(
                "%s: disconnecting from %s failed: %s", self.client_id, self.broker.url, error
            )

    async def _watch_socket(self) -> None:
        """Set ``_lost`` once the socket is closed, failed, or no longer read.

        NOTE: uvloop 0.2x can stop watching a socket when the broker resets
        the connection, without calling the reader that aiomqtt 2.5
        registered. aiomqtt then never learns that the broker went away and
        waits forever. The socket is checked every SOCKET_CHECK_INTERVAL
        seconds: it is lost when it reports an error or end of stream, or
        when the same unread bytes wait in it at two checks in a row, which
        a working reader never lets happen.
        """
        unread_before = 0
        while True:
            await asyncio.sleep(SOCKET_CHECK_INTERVAL)
            sock = self._client._client.socket()
            if not isinstance(sock, socket.socket):
                continue
            reason = None
            data: bytes | None = None
            try:
                data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                pass  # open, with nothing to read
            except OSError as error:
                reason = f"the socket failed: {error}"
            else:
                if not data:
                    reason = "the broker closed the connection"
            unread = _unread_bytes(sock) if data else 0
            if reason is None and unread and unread == unread_before:
                reason = f"{unread} received bytes were left unread"
            unread_before = unread
            if reason is not None:
                logger.debug(
                    "%s: connection to %s lost: %s", self.client_id, self.broker.url, reason
                )
                self._lost.set()
                return

    def _close_lost_connection(self) -> None:
        """Close a connection that aiomqtt has not noticed is lost, so that leaving it does not wait."""
        # NOTE: aiomqtt 2.5 would send DISCONNECT and wait up to its timeout for
        # the broker to close the connection. Marking it disconnected skips that.
        # paho's _sock_close makes aiomqtt stop its keepalive task.
        with contextlib.suppress(Exception):
            self._client._client._sock_close()
        if not self._client._disconnected.done():
            self._client._disconnected.set_result(None)

    async def _until_lost(self, operation: Awaitable[T], failure: str) -> T:
        """Await ``operation``, but raise TransportError as soon as the connection is lost.

        Without this, aiomqtt waits out its timeout for an acknowledgement
        that cannot come. ``failure`` starts the error message.
        """
        task = asyncio.ensure_future(operation)
        lost = asyncio.ensure_future(self._lost.wait())
        # NOTE: aiomqtt 2.5 offers no public way to wait for a disconnection,
        # so this also waits on its private Client._disconnected future.
        disconnected = self._client._disconnected
        try:
            await asyncio.wait({task, lost, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            lost.cancel()
        if disconnected.done() and not disconnected.cancelled():
            disconnected.exception()  # marks it retrieved; the error below reports the loss
        if not task.done():
            task.cancel()
            raise TransportError(f"{failure}: the connection to {self.broker.url} was lost")
        try:
            return task.result()
        except aiomqtt.MqttError as exc:
            raise TransportError(f"{failure}: {exc}") from exc

    async def subscribe(self, topic: str) -> None:
        await self._until_lost(
            self._client.subscribe(topic, qos=1), f"subscribing to {topic} failed"
        )
        self._subscriptions.append(topic)

    async def unsubscribe(self, topic: str) -> None:
        await self._until_lost(
            self._client.unsubscribe(topic), f"unsubscribing from {topic} failed"
        )
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
        publishing = self._client.publish(topic, payload, qos=1, retain=retain)
        await self._until_lost(publishing, f"publishing to {topic} failed")

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
        """Yield incoming messages until the connection closes; then raise TransportError."""
        iterator = aiter(self._client.messages)
        while True:
            message = await self._until_lost(
                anext(iterator), f"connection to {self.broker.url} lost"
            )
            # amqtt 0.12 sends a new client the retained messages of every
            # subscription any client holds, so filter by our own.
            if not any(message.topic.matches(topic) for topic in self._subscriptions):
                continue
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            yield Received(topic=message.topic.value, payload=bytes(payload), retain=message.retain)
