"""Per-round timings of one daemon, for the topology benchmark (``gradchain bench``).

A :class:`RoundTimer` collects, for the round in progress, when it began at
this daemon, when each input's contribution arrived and how long handling it
took (decoding, validation and the homomorphic addition), how long the own
encryption or the learner's decryption took, and when the sum left. It
writes them as one ``round_timing`` event per round into the daemon's event
log. :mod:`gradchain.bench.analysis` joins the events of all daemons into the
critical path of each round.

Points in time are Unix seconds (``time.time()``), so that events of
processes on one machine can be compared; durations come from
``time.perf_counter()``. The cost is a few clock reads and one JSON line per
round, and nothing is written without an events folder.
"""

from __future__ import annotations

import time
from typing import Any

from .eventlog import EventLog

#: Name of the event that :meth:`RoundTimer.record` writes.
ROUND_TIMING_EVENT = "round_timing"


class RoundTimer:
    """Timings of the current round of one daemon."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.round: int | None = None
        self._fields: dict[str, float] = {}
        #: Sender -> [arrival time, seconds spent handling it], first arrival only.
        self._inputs: dict[str, list[float]] = {}
        self._recorded = False

    def start(self, round: int, at: float | None = None) -> None:
        """Begin ``round`` at ``at`` (default: now) and forget the last round's timings."""
        self.round = round
        self._fields = {"start_at": time.time() if at is None else at}
        self._inputs = {}
        self._recorded = False

    def input(self, round: int, sender: str, arrived_at: float, seconds: float) -> None:
        """Note the first contribution of ``sender`` in ``round``: its arrival and handling time."""
        if round == self.round and sender not in self._inputs:
            self._inputs[sender] = [round_time(arrived_at), round_seconds(seconds)]

    def mark(self, round: int, name: str, started_at: float, seconds: float) -> None:
        """Note a step of ``round`` such as ``encrypt`` or ``decrypt``: when it began and how long it took."""
        if round == self.round:
            self._fields[f"{name}_at"] = started_at
            self._fields[f"{name}_s"] = seconds

    def record(self, run: str | None, round: int, **fields: Any) -> None:
        """Write the ``round_timing`` event of ``round`` once; later calls for the round do nothing."""
        if round != self.round or self._recorded:
            return
        self._recorded = True
        timings = {
            name: round_time(value) if name.endswith("_at") else round_seconds(value)
            for name, value in self._fields.items()
        }
        self.events.record(
            ROUND_TIMING_EVENT, run=run, round=round, inputs=self._inputs, **timings, **fields
        )


def round_time(value: float) -> float:
    """Round a Unix time to 0.1 ms."""
    return float(f"{value:.4f}")


def round_seconds(value: float) -> float:
    """Round a duration to 1 µs."""
    return float(f"{value:.6f}")
