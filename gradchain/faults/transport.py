"""A transport wrapper that injects a fault plan's faults into one node's connection.

:class:`FaultyTransport` wraps one :class:`~gradchain.node.transport.MqttTransport`
and sits where the daemon publishes and receives, so the daemon and the
protocol run unchanged. It reads the round number from the RoundStart
messages that pass through it, and the node's
:class:`~gradchain.faults.injector.FaultInjector` decides what to do:

- outgoing messages are dropped, published twice, held back, reordered or
  have one bit flipped;
- at a crash point the process ends with ``os._exit(CRASH_EXIT_CODE)``, as a
  real crash would, without closing the connection or flushing anything but
  the event log;
- a disconnect drops the TCP connection and refuses to connect again until
  the fault's duration has passed;
- a link fault queues every outgoing message behind the ones before it and
  publishes it after its transmission time at the link's bandwidth plus the
  link's latency, as a slow link from the node to the broker would.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import NoReturn

from ..errors import ProtocolError, TransportError
from ..node.transport import Received, Transport
from ..protocol import Contribution, Message, RoundStart
from ..protocol.sealing import SealedEnvelope
from ..protocol.signing import peek
from .injector import CRASH_EXIT_CODE, FaultInjector
from .plan import CrashFault, DisconnectFault

logger = logging.getLogger(__name__)


def _exit_process(code: int) -> NoReturn:
    os._exit(code)


class FaultyTransport:
    """A :class:`Transport` that applies a node's faults around an inner transport."""

    def __init__(
        self,
        inner: Transport,
        injector: FaultInjector,
        *,
        exit_process: Callable[[int], NoReturn] = _exit_process,
    ) -> None:
        self.inner = inner
        self.injector = injector
        self.client_id = inner.client_id
        self._exit_process = exit_process
        self._held: list[tuple[str, bytes, bool]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: Event loop time at which the emulated link has sent everything queued so far.
        self._link_free_at = 0.0
        self._link_queue: asyncio.Queue[tuple[float, str, bytes, bool]] = asyncio.Queue()
        self._link_sender: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FaultyTransport:
        loop = asyncio.get_running_loop()
        remaining = self.injector.disconnected_until - loop.time()
        if remaining > 0:
            raise TransportError(
                f"fault injection keeps node {self.injector.node_id} disconnected for {remaining:.1f} s more"
            )
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        if self._link_sender is not None:
            self._link_sender.cancel()
        self._held.clear()
        await self.inner.__aexit__(exc_type, exc, traceback)

    async def subscribe(self, topic: str) -> None:
        await self.inner.subscribe(topic)

    async def unsubscribe(self, topic: str) -> None:
        await self.inner.unsubscribe(topic)

    def abort(self) -> None:
        self.inner.abort()

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish ``payload`` after the faults that the injector draws for it."""
        message = _peek(payload)
        contribution_round = _contribution_round(message)
        if contribution_round is not None:
            self._crash_if_due("before_send", contribution_round)

        decision = self.injector.decide(_message_type(message), len(payload))
        for fault in decision.fired:
            self.injector.record(fault, message=_message_type(message), topic=topic)
        if decision.drop:
            logger.info(
                "[%s] fault injection dropped a %s on %s",
                self.client_id,
                _message_type(message),
                topic,
            )
        else:
            if decision.corrupt_bit is not None:
                payload = _flip_bit(payload, decision.corrupt_bit)
            copies = 2 if decision.duplicate else 1
            if decision.delay > 0:
                self._later(decision.delay, [(topic, payload, retain)] * copies)
            elif decision.reorder_hold is not None:
                self._held.extend([(topic, payload, retain)] * copies)
                self._later(decision.reorder_hold, None)
            else:
                for _ in range(copies):
                    await self._transmit(topic, payload, retain, message)
                await self._release_held()

        if isinstance(message, RoundStart):
            await self._start_round(message)
        if contribution_round is not None:
            self._crash_if_due("after_send", contribution_round)

    async def messages(self) -> AsyncIterator[Received]:
        """Yield the inner transport's messages, starting the faults of each new round."""
        async for received in self.inner.messages():
            message = _peek(received.payload)
            if isinstance(message, RoundStart):
                await self._start_round(message)
            yield received

    async def _start_round(self, message: RoundStart) -> None:
        for fault in self.injector.round_started(message.run, message.round):
            if isinstance(fault, CrashFault):
                self._crash(fault, f"at the start of round {message.round}")
            elif isinstance(fault, DisconnectFault):
                self._disconnect(fault)

    def _crash_if_due(self, at: str, round: int) -> None:
        fault = self.injector.crash_due(at, round)
        if fault is not None:
            where = "before" if at == "before_send" else "after"
            self._crash(fault, f"{where} sending its contribution of round {round}")

    def _crash(self, fault: CrashFault, when: str) -> None:
        self.injector.record(fault, at=fault.at, restart_after=fault.restart_after)
        self.injector.events.sync()
        logger.warning("[%s] fault injection: crashing %s", self.client_id, when)
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._exit_process(CRASH_EXIT_CODE)

    def _disconnect(self, fault: DisconnectFault) -> None:
        loop = asyncio.get_running_loop()
        self.injector.disconnected_until = loop.time() + fault.duration
        self.injector.record(fault, duration=fault.duration)
        logger.warning(
            "[%s] fault injection: disconnecting for %g s", self.client_id, fault.duration
        )
        self.inner.abort()

    def _later(self, delay: float, messages: list[tuple[str, bytes, bool]] | None) -> None:
        """Publish ``messages`` after ``delay`` seconds, or release the held messages when None."""

        async def publish_later() -> None:
            await asyncio.sleep(delay)
            try:
                if messages is None:
                    await self._release_held()
                else:
                    for topic, payload, retain in messages:
                        await self._transmit(topic, payload, retain, _peek(payload))
            except TransportError as error:
                logger.info(
                    "[%s] a message held back by fault injection was lost: %s",
                    self.client_id,
                    error,
                )

        task = asyncio.create_task(publish_later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release_held(self) -> None:
        held, self._held = self._held, []
        for topic, payload, retain in held:
            await self._transmit(topic, payload, retain, _peek(payload))

    async def _transmit(
        self, topic: str, payload: bytes, retain: bool, message: Message | SealedEnvelope | None
    ) -> None:
        """Publish now, or queue the message on the emulated link when a link fault applies to it."""
        link = self.injector.link_delay(_message_type(message), len(payload))
        if link is None:
            await self.inner.publish(topic, payload, retain=retain)
            return
        transmission, latency = link
        now = asyncio.get_running_loop().time()
        self._link_free_at = max(now, self._link_free_at) + transmission
        self._link_queue.put_nowait((self._link_free_at + latency, topic, payload, retain))
        if self._link_sender is None or self._link_sender.done():
            self._link_sender = asyncio.create_task(self._send_over_link())

    async def _send_over_link(self) -> None:
        """Publish the link's queued messages in order, each at its due time."""
        loop = asyncio.get_running_loop()
        while True:
            due, topic, payload, retain = await self._link_queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                await self.inner.publish(topic, payload, retain=retain)
            except TransportError as error:
                logger.info(
                    "[%s] a message on the emulated link was lost: %s", self.client_id, error
                )


def _peek(payload: bytes) -> Message | SealedEnvelope | None:
    """Parse a payload without verifying it; a sealed one yields only its readable envelope."""
    if not payload:
        return None
    try:
        return peek(payload)
    except ProtocolError:
        return None


def _contribution_round(message: Message | SealedEnvelope | None) -> int | None:
    if isinstance(message, Contribution):
        return message.round
    if isinstance(message, SealedEnvelope) and message.kind == "contribution":
        return message.round
    return None


_TYPE_NAMES = {
    "RoundStart": "round_start",
    "Contribution": "contribution",
    "Ack": "ack",
    "JobDone": "job_done",
    "Status": "status",
}


def _message_type(message: Message | SealedEnvelope | None) -> str:
    if message is None:
        return "unknown"
    if isinstance(message, SealedEnvelope):
        return message.kind
    return _TYPE_NAMES[type(message).__name__]


def _flip_bit(payload: bytes, bit: int) -> bytes:
    data = bytearray(payload)
    data[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(data)
