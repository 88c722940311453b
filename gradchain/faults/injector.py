"""The fault decisions of one node, without IO.

A :class:`FaultInjector` contains the faults a plan gives one node, and a random
number generator seeded from the plan's seed and the node id. It decides
what the transport wrapper in :mod:`.transport` does with each outgoing
message and each new round, and how long the node daemon holds back the
node's own contribution. The same sequence of calls gets the same decisions,
so a run repeated with the same plan injects the same faults as long as the
nodes send the same messages. Resends depend on timing, so a repeated run can
send a different sequence.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..node.eventlog import EventLog, read_events
from .plan import (
    CrashFault,
    DisconnectFault,
    Fault,
    FaultPlan,
    LinkFault,
    MessageFault,
    StragglerFault,
)

#: Exit status of a process that a crash fault ended. The launcher restarts
#: such a node when the plan gives ``restart_after``, and reads any other
#: non-zero status as a real failure.
CRASH_EXIT_CODE = 86


@dataclass(frozen=True, kw_only=True)
class MessageDecision:
    """Handling of one outgoing message. The defaults publish it once, unchanged."""

    drop: bool = False
    #: Index of the payload bit to flip, counted from the first byte's most significant bit.
    corrupt_bit: int | None = None
    duplicate: bool = False
    #: Seconds to hold the message before it is published.
    delay: float = 0.0
    #: Maximum time to keep the message back so that the next one overtakes it.
    reorder_hold: float | None = None
    fired: tuple[MessageFault, ...] = ()


class FaultInjector:
    """The faults of one node and the seeded decisions that apply them."""

    def __init__(self, plan: FaultPlan, node_id: str, events: EventLog) -> None:
        self.node_id = node_id
        self.faults: tuple[Fault, ...] = plan.for_node(node_id)
        self.rng = random.Random(f"gradchain-faults:{plan.seed}:{node_id}")
        self.events = events
        self.run: str | None = None
        self.round = 0
        #: Event loop time until which a disconnect fault keeps the node off the broker.
        self.disconnected_until = 0.0
        #: (fault index, run) of the crash and disconnect faults that already fired,
        #: also in an earlier process of this node whose events are in the same file.
        self.fired: set[tuple[int, str]] = set()
        if events.path is not None:
            self.fired = set(fired_one_shot_faults(read_events(events.path)))

    def round_started(self, run: str, round: int) -> list[CrashFault | DisconnectFault]:
        """Note that round ``round`` of ``run`` began; return the one-shot faults due now.

        These are crashes at ``round_start`` and disconnects of that round.
        Each fires at most once per run, even when RoundStart arrives again.
        """
        self.run = run
        self.round = round
        due: list[CrashFault | DisconnectFault] = []
        for fault in self.faults:
            if isinstance(fault, CrashFault) and fault.at != "round_start":
                continue
            if (
                isinstance(fault, CrashFault | DisconnectFault)
                and fault.round == round
                and self._claim(fault)
            ):
                due.append(fault)
        return due

    def crash_due(self, at: str, round: int) -> CrashFault | None:
        """Return the crash fault that fires ``at`` a send in ``round``, if any."""
        for fault in self.faults:
            if (
                isinstance(fault, CrashFault)
                and fault.at == at
                and fault.round == round
                and self._claim(fault)
            ):
                return fault
        return None

    def decide(self, message_type: str, payload_bytes: int) -> MessageDecision:
        """Draw the message faults for one outgoing message of ``message_type``.

        Every message fault of the node that applies to the type and the
        current round draws one number, in plan order. A corrupt fault that
        fires draws a second one, the bit it flips among the payload's
        ``payload_bytes * 8`` bits. Nothing is drawn after a drop fires.
        """
        fields: dict[str, Any] = {}
        fired: list[MessageFault] = []
        for fault in self.faults:
            if not isinstance(fault, MessageFault) or message_type not in fault.messages:
                continue
            if not self._in_window(fault.first_round, fault.last_round):
                continue
            if self.rng.random() >= fault.probability:
                continue
            fired.append(fault)
            if fault.kind == "drop":
                fields["drop"] = True
                break
            if fault.kind == "corrupt" and payload_bytes > 0:
                fields["corrupt_bit"] = self.rng.randrange(payload_bytes * 8)
            elif fault.kind == "duplicate":
                fields["duplicate"] = True
            elif fault.kind == "delay":
                fields["delay"] = fields.get("delay", 0.0) + fault.delay
            elif fault.kind == "reorder":
                fields["reorder_hold"] = fault.delay
        return MessageDecision(fired=tuple(fired), **fields)

    def link_delay(self, message_type: str, payload_bytes: int) -> tuple[float, float] | None:
        """Return (transmission seconds, latency seconds) of the node's emulated link for one message.

        Transmission is the payload's bits divided by the lowest
        ``bandwidth_mbps`` of the link faults that apply, and latency is the
        sum of their latencies. Returns None when no link fault applies to
        ``message_type``. Draws no random numbers.
        """
        links = [
            fault
            for fault in self.faults
            if isinstance(fault, LinkFault) and message_type in fault.messages
        ]
        if not links:
            return None
        caps = [fault.bandwidth_mbps for fault in links if fault.bandwidth_mbps is not None]
        transmission = payload_bytes * 8 / (min(caps) * 1e6) if caps else 0.0
        return transmission, sum(fault.latency for fault in links)

    def hold_own_contribution(self, round: int) -> float:
        """Return the seconds to hold back this node's own contribution of ``round``.

        Records an event for every straggler fault that applies.
        """
        delay = 0.0
        for fault in self.faults:
            if isinstance(fault, StragglerFault) and self._in_window(
                fault.first_round, fault.last_round, round
            ):
                self.record(fault, round=round, delay=fault.delay)
                delay += fault.delay
        return delay

    def record(self, fault: Fault, *, round: int | None = None, **fields: Any) -> None:
        """Append a fault event for ``fault`` to the node's event log, in the current round by default."""
        self.events.record(
            "fault",
            run=self.run,
            round=self.round if round is None else round,
            kind=fault.kind,
            fault=fault.index,
            **fields,
        )

    def _claim(self, fault: CrashFault | DisconnectFault) -> bool:
        """Mark a one-shot fault as fired in this run; return False when it already had."""
        if self.run is None:
            return False
        key = (fault.index, self.run)
        if key in self.fired:
            return False
        self.fired.add(key)
        return True

    def _in_window(self, first: int, last: int | None, round: int | None = None) -> bool:
        current = self.round if round is None else round
        return current >= first and (last is None or current <= last)


def fired_one_shot_faults(events: Iterable[dict[str, Any]]) -> Iterable[tuple[int, str]]:
    """Yield (fault index, run) of every crash or disconnect fault recorded in ``events``."""
    for entry in events:
        if entry.get("event") != "fault" or entry.get("kind") not in ("crash", "disconnect"):
            continue
        index, run = entry.get("fault"), entry.get("run")
        if isinstance(index, int) and isinstance(run, str):
            yield index, run
