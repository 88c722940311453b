"""The broker connection of one daemon, kept up across broker restarts and network loss.

:class:`Connection` connects, subscribes, publishes the daemon's retained
online status with a last will of offline, and feeds every received message
to the daemon. When the connection is lost it connects again after an
exponential backoff with jitter and subscribes again, while the daemon keeps
its protocol state. Before the first connection it checks that no other
process runs the same node id (see :mod:`.liveness`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from ..errors import TransportError
from ..protocol import Liveness, Status, encode
from ..protocol.signing import MessageSigning, unsigned
from ..protocol.topics import status_topic
from .backoff import RECONNECT, Backoff
from .broker import BrokerAddress
from .common import NodeLogger
from .eventlog import EventLog
from .liveness import DEFAULT_OFFLINE_WAIT, ensure_not_running
from .transport import MqttTransport, Received, Transport

logger = logging.getLogger(__name__)

#: Seconds a daemon keeps trying to reach the broker for the first time before it gives up.
FIRST_CONNECT_TIMEOUT = 30.0

TransportFactory = Callable[[MqttTransport], Transport]


class Connection:
    """Keeps one daemon connected to the broker and publishes for it."""

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        job: str,
        node_id: str,
        instance: str,
        subscriptions: Sequence[str],
        log: NodeLogger,
        events: EventLog,
        wrap: TransportFactory | None = None,
        backoff: Backoff = RECONNECT,
        offline_wait: float = DEFAULT_OFFLINE_WAIT,
        first_connect_timeout: float = FIRST_CONNECT_TIMEOUT,
        signing: MessageSigning | None = None,
    ) -> None:
        self.broker = broker
        self.job = job
        self.node_id = node_id
        self.instance = instance
        self.subscriptions = tuple(subscriptions)
        self.log = log
        self.events = events
        self.wrap = wrap
        self.backoff = backoff
        self.offline_wait = offline_wait
        self.first_connect_timeout = first_connect_timeout
        self.signing = unsigned(node_id, node_id) if signing is None else signing
        self.client_id = f"gradchain-{job}-{node_id}"
        self.connected = asyncio.Event()
        self.connections = 0
        self._transport: Transport | None = None

    def status(self, state: Liveness) -> bytes:
        """Return the encoded retained status of this daemon, signed when it has a signing key.

        The offline status is also the last will, which the broker publishes
        after the daemon is gone, so it is signed in advance at each connect.
        It names this process's random instance id, so a receiver can tell it
        from the status of an earlier or later process of the same node id.
        """
        status = Status(job=self.job, node=self.node_id, state=state, instance=self.instance)
        return self.signing.sign(encode(status))

    async def run(
        self,
        handle: Callable[[Received], Awaitable[None]],
        stopped: asyncio.Event,
        *,
        on_connected: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Feed every received message to ``handle`` until ``stopped`` is set, reconnecting as needed.

        Raises DuplicateNodeError when another process runs this node id, and
        TransportError when the broker cannot be reached within
        ``first_connect_timeout`` seconds of the start.
        """
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.first_connect_timeout
        delays = self.backoff.delays()
        attempt = 0
        while not stopped.is_set():
            connections_before = self.connections
            try:
                if self.connections == 0:
                    await ensure_not_running(
                        self.broker,
                        self.job,
                        self.node_id,
                        offline_wait=self.offline_wait,
                        signing=self.signing,
                    )
                await self._serve(handle, stopped, on_connected)
                return
            except TransportError as error:
                self._transport = None
                self.connected.clear()
                if stopped.is_set():
                    return
                if self.connections == 0 and loop.time() >= give_up_at:
                    raise
                if self.connections > connections_before:
                    # The connection was up, so the backoff starts again from its shortest delay.
                    delays = self.backoff.delays()
                    attempt = 0
                attempt += 1
                delay = next(delays)
                self.log.warning(
                    "connection to %s failed or was lost (%s); reconnecting in %.1f s (attempt %d)",
                    self.broker.url,
                    error,
                    delay,
                    attempt,
                )
                self.events.record("connection_lost", error=str(error), retry_in=round(delay, 3))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopped.wait(), delay)

    async def _serve(
        self,
        handle: Callable[[Received], Awaitable[None]],
        stopped: asyncio.Event,
        on_connected: Callable[[], Awaitable[None]] | None,
    ) -> None:
        inner = MqttTransport(
            self.broker,
            client_id=self.client_id,
            will_topic=status_topic(self.job, self.node_id),
            will_payload=self.status(Liveness.OFFLINE),
        )
        transport: Transport = inner if self.wrap is None else self.wrap(inner)
        async with transport:
            for topic in self.subscriptions:
                await transport.subscribe(topic)
            await transport.publish(
                status_topic(self.job, self.node_id), self.status(Liveness.ONLINE), retain=True
            )
            self._transport = transport
            self.connections += 1
            self.connected.set()
            if self.connections > 1:
                self.log.info("reconnected to %s", self.broker.url)
                self.events.record("reconnected", connections=self.connections)
            if on_connected is not None:
                await on_connected()

            reader = asyncio.create_task(
                self._read(transport, handle), name=f"{self.node_id}-reader"
            )
            stopper = asyncio.create_task(stopped.wait())
            try:
                done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                if not reader.done():
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
            if reader in done:
                reader.result()  # raises the TransportError that ended the connection
                raise TransportError(f"the broker at {self.broker.url} closed the connection")
            self.connected.clear()
            self._transport = None
            try:
                # Unsubscribing first spares the broker from sending to a client that
                # is about to close, which amqtt 0.12 logs as an error per message.
                for topic in self.subscriptions:
                    await transport.unsubscribe(topic)
                await transport.publish(
                    status_topic(self.job, self.node_id), self.status(Liveness.OFFLINE), retain=True
                )
            except TransportError as error:
                self.log.warning("publishing the offline status failed: %s", error)

    @staticmethod
    async def _read(transport: Transport, handle: Callable[[Received], Awaitable[None]]) -> None:
        async for received in transport.messages():
            await handle(received)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish now if connected; return whether the broker acknowledged the message.

        A failure is logged, not raised, because the callers resend
        unacknowledged contributions and republish the round after reconnecting.
        """
        transport = self._transport
        if transport is None:
            self.log.debug("not connected; did not publish to %s", topic)
            return False
        try:
            await transport.publish(topic, payload, retain=retain)
        except TransportError as error:
            self.log.warning("%s", error)
            return False
        return True
