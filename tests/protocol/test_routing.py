"""Tests for gradchain.protocol.routing."""

from __future__ import annotations

import pytest

from gradchain.protocol.routing import (
    awaited_senders,
    deadline_share,
    next_online,
    sample_participants,
)

# Chain p1 -> p2 -> p3 -> p4 -> learner, seen from p4.
CHAIN_FEEDERS = {"p3": frozenset({"p2"}), "p2": frozenset({"p1"}), "p1": frozenset()}
CHAIN_CARRIES = {
    "p3": frozenset({"p1", "p2", "p3"}),
    "p2": frozenset({"p1", "p2"}),
    "p1": frozenset({"p1"}),
}


def chain_awaited(
    *,
    received: tuple[str, ...] = (),
    counted: tuple[str, ...] = (),
    offline: tuple[str, ...] = (),
    participants: tuple[str, ...] | None = None,
) -> frozenset[str]:
    return awaited_senders(
        ["p3"],
        feeders=CHAIN_FEEDERS,
        carries=CHAIN_CARRIES,
        received=received,
        counted=counted,
        offline=offline,
        participants=participants,
    )


# Deadlines


@pytest.mark.parametrize(
    ("distance", "max_hops", "share"),
    [
        pytest.param(0, 4, 1.0, id="learner"),
        pytest.param(1, 4, 0.8, id="last-node"),
        pytest.param(4, 4, 0.2, id="chain-head"),
        pytest.param(1, 1, 0.5, id="star"),
    ],
)
def test_deadline_share_formula(distance: int, max_hops: int, share: float) -> None:
    assert deadline_share(distance, max_hops) == pytest.approx(share)


def test_deadline_share_grows_towards_learner() -> None:
    shares = [deadline_share(distance, 6) for distance in range(6, -1, -1)]

    assert shares == sorted(shares)
    assert len(set(shares)) == len(shares)


@pytest.mark.parametrize(("distance", "max_hops"), [(5, 4), (-1, 4), (0, -1)])
def test_deadline_share_rejects_distance_outside_path(distance: int, max_hops: int) -> None:
    with pytest.raises(ValueError, match="must lie in"):
        deadline_share(distance, max_hops)


# Next online node


def test_next_online_takes_successor_when_online() -> None:
    assert next_online(("p2", "p3", "learner"), offline=set()) == ("p2", ())


def test_next_online_skips_offline_nodes() -> None:
    assert next_online(("p2", "p3", "learner"), offline={"p2", "p3"}) == ("learner", ("p2", "p3"))


def test_next_online_skips_only_what_is_offline() -> None:
    assert next_online(("p2", "p3", "p4", "learner"), offline={"p2", "p4"}) == ("p3", ("p2",))


def test_next_online_keeps_learner_when_offline() -> None:
    assert next_online(("learner",), offline={"learner"}) == ("learner", ())


def test_next_online_rejects_empty_path() -> None:
    with pytest.raises(ValueError, match="empty"):
        next_online((), offline=set())


# Awaited senders


def test_awaits_online_input_that_has_not_sent() -> None:
    assert chain_awaited() == {"p3"}


def test_input_that_sent_is_not_awaited() -> None:
    assert chain_awaited(received=("p3",), counted=("p1", "p2", "p3")) == frozenset()


def test_offline_input_is_replaced_by_its_inputs() -> None:
    assert chain_awaited(offline=("p3",)) == {"p2"}


def test_offline_inputs_are_replaced_recursively() -> None:
    assert chain_awaited(offline=("p3", "p2")) == {"p1"}


def test_everything_upstream_offline_awaits_nothing() -> None:
    assert chain_awaited(offline=("p3", "p2", "p1")) == frozenset()


def test_rerouted_sender_that_sent_ends_the_wait() -> None:
    assert chain_awaited(received=("p2",), counted=("p1", "p2"), offline=("p3",)) == frozenset()


def test_input_without_participants_is_not_awaited() -> None:
    # p3 carries p1, p2 and p3, none of which takes part.
    assert chain_awaited(participants=("p4",)) == frozenset()


def test_offline_input_without_participants_skipped() -> None:
    # Only p3 itself takes part, and it is offline, so nothing can come.
    assert chain_awaited(offline=("p3",), participants=("p3",)) == frozenset()


def test_input_with_counted_participants_skipped() -> None:
    # p1 and p2 arrived around p3; p3 is back online, but takes no part itself.
    awaited = chain_awaited(received=("p2",), counted=("p1", "p2"), participants=("p1", "p2"))

    assert awaited == frozenset()


def test_input_with_uncounted_participant_awaited() -> None:
    awaited = chain_awaited(received=("p2",), counted=("p1", "p2"))

    assert awaited == {"p3"}


def test_aggregator_awaits_each_input_on_its_own() -> None:
    awaited = awaited_senders(
        ["a", "b", "c"],
        feeders={},
        carries={"a": {"p1"}, "b": {"p2", "p3"}, "c": {"p4"}},
        received=["b"],
        counted=["p2", "p3"],
        offline=["c"],
        participants=None,
    )

    assert awaited == {"a"}


# Sampling participants


def test_full_fraction_samples_everyone() -> None:
    assert sample_participants(["p1", "p2", "p3"], fraction=1.0, minimum=1, seed=0, round=1) is None


def test_sample_has_ceil_of_fraction() -> None:
    providers = [f"p{index}" for index in range(1, 11)]

    sample = sample_participants(providers, fraction=0.25, minimum=1, seed=5, round=3)

    assert sample is not None
    assert len(sample) == 3
    assert set(sample) <= set(providers)
    assert list(sample) == sorted(sample)


def test_sample_never_below_minimum() -> None:
    providers = [f"p{index}" for index in range(1, 11)]

    sample = sample_participants(providers, fraction=0.1, minimum=4, seed=5, round=3)

    assert sample is not None
    assert len(sample) == 4


def test_minimum_at_provider_count_samples_everyone() -> None:
    assert sample_participants(["p1", "p2", "p3"], fraction=0.1, minimum=3, seed=0, round=1) is None


def test_sample_repeats_for_same_seed_and_round() -> None:
    providers = [f"p{index}" for index in range(1, 21)]

    first = sample_participants(providers, fraction=0.5, minimum=3, seed=11, round=7)
    again = sample_participants(
        list(reversed(providers)), fraction=0.5, minimum=3, seed=11, round=7
    )

    assert first == again


def test_sample_changes_with_round_and_seed() -> None:
    providers = [f"p{index}" for index in range(1, 21)]

    samples = {
        sample_participants(providers, fraction=0.5, minimum=3, seed=seed, round=round_number)
        for seed in (1, 2)
        for round_number in range(1, 6)
    }

    assert len(samples) > 5


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_sample_rejects_fraction_outside_range(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        sample_participants(["p1", "p2"], fraction=fraction, minimum=1, seed=0, round=1)
