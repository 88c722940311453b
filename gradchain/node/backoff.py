"""Exponential backoff with jitter, as a pure generator of delays.

The daemons wait these delays between attempts to reconnect to the broker and
between resends of an unacknowledged contribution. Keeping the schedule free
of clocks and sleeps lets tests check it without waiting.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Settings of an exponential backoff schedule, in seconds.

    Attempt k (from 0) waits min(maximum, initial * factor**k), scaled by a
    random factor drawn uniformly from [1 - jitter, 1 + jitter] so that nodes
    that lost the broker together do not all reconnect at the same moment.
    """

    initial: float = 0.5
    maximum: float = 10.0
    factor: float = 2.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {self.initial} and {self.maximum}")
        if self.factor < 1:
            raise ValueError(f"factor must be at least 1, got {self.factor}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must lie in [0, 1), got {self.jitter}")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Yield the delay before each attempt, without end."""
        rng = rng if rng is not None else random.Random()
        base = self.initial
        while True:
            yield base * rng.uniform(1 - self.jitter, 1 + self.jitter)
            base = min(self.maximum, base * self.factor)


#: Reconnecting to the broker: from about half a second up to about ten seconds.
RECONNECT = Backoff(initial=0.5, maximum=10.0)


def resend_backoff(round_timeout: float) -> Backoff:
    """Return the schedule for resending a contribution in a round of ``round_timeout`` seconds.

    The first resend comes after 1/40 of the timeout (at most one second), so
    a lost message can still make the deadlines of the nodes after the sender.
    The delays grow to at most a quarter of the timeout.
    """
    initial = min(1.0, round_timeout / 40)
    return Backoff(initial=initial, maximum=max(initial, round_timeout / 4))
