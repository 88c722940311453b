"""Tests for gradchain.node.backoff: the delay schedule, checked without sleeping."""

from __future__ import annotations

import itertools
import random

import pytest

from gradchain.node.backoff import RECONNECT, Backoff, resend_backoff


def first(delays: Backoff, count: int, seed: int = 0) -> list[float]:
    return list(itertools.islice(delays.delays(random.Random(seed)), count))


def test_delays_double_up_to_maximum_without_jitter() -> None:
    schedule = Backoff(initial=0.5, maximum=5.0, factor=2.0, jitter=0.0)

    assert first(schedule, 7) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_jitter_stays_within_bounds() -> None:
    schedule = Backoff(initial=1.0, maximum=8.0, factor=2.0, jitter=0.25)
    bases = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]

    for seed in range(50):
        for delay, base in zip(first(schedule, len(bases), seed), bases, strict=True):
            assert 0.75 * base <= delay <= 1.25 * base


def test_jitter_spreads_delays() -> None:
    delays = {first(RECONNECT, 1, seed)[0] for seed in range(20)}

    assert len(delays) == 20


def test_same_seed_gives_same_delays() -> None:
    assert first(RECONNECT, 10, seed=3) == first(RECONNECT, 10, seed=3)


def test_generator_never_ends() -> None:
    delays = RECONNECT.delays(random.Random(1))

    values = [next(delays) for _ in range(1000)]

    assert max(values) <= RECONNECT.maximum * (1 + RECONNECT.jitter)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"initial": 0.0}, id="zero-initial"),
        pytest.param({"initial": 5.0, "maximum": 1.0}, id="initial-above-maximum"),
        pytest.param({"factor": 0.5}, id="shrinking"),
        pytest.param({"jitter": 1.0}, id="jitter-one"),
        pytest.param({"jitter": -0.1}, id="negative-jitter"),
    ],
)
def test_invalid_settings_rejected(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**settings)


@pytest.mark.parametrize(
    ("timeout", "initial", "maximum"),
    [
        pytest.param(120.0, 1.0, 30.0, id="default-timeout"),
        pytest.param(8.0, 0.2, 2.0, id="short-timeout"),
    ],
)
def test_resend_schedule_scales_with_round_timeout(
    timeout: float, initial: float, maximum: float
) -> None:
    schedule = resend_backoff(timeout)

    assert schedule.initial == pytest.approx(initial)
    assert schedule.maximum == pytest.approx(maximum)
