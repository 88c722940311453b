"""Count the bytes that a job's messages carry through the broker.

:class:`TrafficCounter` subscribes to every topic of one job with QoS 1 and
adds up the payload bytes of each message by round and message type. This
counts what the daemons publish into the broker once per message, without
MQTT headers. The broker delivers each message to every subscriber, so a
RoundStart reaches each node: :func:`delivered_bytes` estimates that total.
The counter is one more subscriber, so the broker sends each message once
more than it would without the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import defaultdict
from typing import Any

import aiomqtt

from ..errors import ProtocolError
from ..node.broker import BrokerAddress
from ..protocol import Ack, Contribution, JobDone, RoundStart, Status
from ..protocol.sealing import SealedEnvelope
from ..protocol.signing import peek
from ..protocol.topics import job_wildcard

_TYPE_NAMES = {
    RoundStart: "round_start",
    Contribution: "contribution",
    Ack: "ack",
    JobDone: "job_done",
    Status: "status",
}


class TrafficCounter:
    """Payload bytes and message counts of one job, by round and message type."""

    def __init__(self, broker: BrokerAddress, job: str) -> None:
        self.broker = broker
        self.job = job
        #: round -> message type -> [messages, payload bytes]; round 0 counts the messages that have no round.
        self.by_round: dict[int, dict[str, list[int]]] = defaultdict(
            lambda: defaultdict(lambda: [0, 0])
        )
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Connect and subscribe; return once the subscription is in place."""
        self._task = asyncio.create_task(self._run(), name=f"traffic-{self.job}")
        waiter = asyncio.create_task(self._subscribed.wait())
        await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            waiter.cancel()
            self._task.result()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=f"gradchain-bench-traffic-{secrets.token_hex(4)}",
            protocol=aiomqtt.ProtocolVersion.V311,
        ) as client:
            await client.subscribe(job_wildcard(self.job), qos=1)
            self._subscribed.set()
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, bytes | bytearray):
                    self.count(bytes(payload))

    def count(self, payload: bytes) -> None:
        """Add one message to the counts."""
        if not payload:
            return  # a cleared retained message
        try:
            decoded = peek(payload)
        except ProtocolError:
            kind, round = "invalid", 0
        else:
            if isinstance(decoded, SealedEnvelope):
                # A sealed Contribution or Ack shows only its kind and round.
                kind = decoded.kind
            else:
                kind = _TYPE_NAMES.get(type(decoded), "other")
            round = getattr(decoded, "round", 0) if not isinstance(decoded, Status) else 0
        entry = self.by_round[round][kind]
        entry[0] += 1
        entry[1] += len(payload)

    def round_summary(self, round: int) -> dict[str, Any]:
        """Return the message counts and payload bytes of ``round`` by message type, and their total."""
        kinds = self.by_round.get(round, {})
        by_type = {
            kind: {"messages": counts[0], "bytes": counts[1]}
            for kind, counts in sorted(kinds.items())
        }
        return {"bytes": sum(counts[1] for counts in kinds.values()), "by_type": by_type}


def delivered_bytes(summary: dict[str, Any], nodes: int) -> int:
    """Estimate the bytes the broker sends out for one round: each RoundStart to every node, the rest to one client."""
    by_type = summary["by_type"]
    round_start = by_type.get("round_start", {}).get("bytes", 0)
    return int(round_start * nodes + summary["bytes"] - round_start)
