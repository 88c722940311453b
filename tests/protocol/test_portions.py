"""Tests for providers that split their contribution into portions over disjoint aggregators."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pytest

from gradchain.crypto import add_vectors, encrypt_portions
from gradchain.errors import DuplicateMessageError, ProtocolError
from gradchain.protocol.events import (
    DecryptTotal,
    Dropped,
    PublishRound,
    RoundFailed,
    SendContribution,
)
from gradchain.protocol.learner import LearnerProtocol
from gradchain.protocol.messages import Ack, Contribution, Liveness, RoundStart, Status
from gradchain.protocol.node import NodeProtocol, NodeState
from tests.protocol.test_learner import RUN, THETA0, learner_config
from tests.protocol.test_node import JOB, chain_config, round_start

if TYPE_CHECKING:
    from tests.protocol.conftest import Paillier

# p1 sends portion 0 to a1 and portion 1 to a2, which forwards through x2.
PATHS = (("a1", "learner"), ("a2", "x2", "learner"))
VECTORS = {"p1": (0.5, -1.25, 0.75), "p2": (2.0, 0.125, 0.5), "p3": (-3.5, 4.0, 1.0)}


def split_provider(paillier: Paillier) -> NodeProtocol:
    node = NodeProtocol(chain_config(node_id="p1", successor="a1", inputs={}, portion_paths=PATHS))
    node.receive(round_start(paillier))
    return node


def portions_of(paillier: Paillier, values: Sequence[float], count: int = 2) -> list[list[int]]:
    split, clipped = encrypt_portions(paillier.public_key, paillier.encoding, values, count)
    assert clipped == 0
    return split


def ack(sender: str, of: str = "p1", round: int = 1) -> Ack:
    return Ack(job=JOB, run=RUN, round=round, sender=sender, of=of)


def status(node: str, state: Liveness) -> Status:
    return Status(job=JOB, node=node, state=state, instance="0123456789abcdef")


def sends(actions: Sequence[object]) -> list[SendContribution]:
    assert all(isinstance(action, SendContribution) for action in actions), actions
    return [action for action in actions if isinstance(action, SendContribution)]


def test_each_portion_goes_to_its_own_aggregator(paillier: Paillier) -> None:
    node = split_provider(paillier)
    split = portions_of(paillier, VECTORS["p1"])

    sent = sends(node.own_portions_ready(1, split))

    assert [action.to for action in sent] == ["a1", "a2"]
    assert [action.message.ciphertexts for action in sent] == [tuple(part) for part in split]
    assert all(action.message.contributors == ("p1",) for action in sent)
    # The portions add up to the whole contribution under the learner's key.
    total = add_vectors(paillier.public_key, split[0], split[1])
    assert paillier.decrypt(total, contributors=1).tolist() == list(VECTORS["p1"])


def test_acks_and_resends_are_per_portion(paillier: Paillier) -> None:
    node = split_provider(paillier)
    node.own_portions_ready(1, portions_of(paillier, VECTORS["p1"]))

    assert node.receive(ack("a1")) == []
    assert not node.acknowledged
    assert [action.to for action in sends(node.retry_due(1))] == ["a2"]
    with pytest.raises(DuplicateMessageError):
        node.receive(ack("a1"))

    node.receive(ack("a2"))
    assert node.acknowledged
    assert node.retry_due(1) == []


def test_ack_from_outside_paths_rejected(paillier: Paillier) -> None:
    node = split_provider(paillier)
    node.own_portions_ready(1, portions_of(paillier, VECTORS["p1"]))

    with pytest.raises(ProtocolError, match="not on this node's path"):
        node.receive(ack("a9"))
    assert not node.acknowledged


def test_portion_reroute_avoids_learner(
    paillier: Paillier,
) -> None:
    node = split_provider(paillier)
    node.receive(status("a2", Liveness.OFFLINE))

    sent = sends(node.own_portions_ready(1, portions_of(paillier, VECTORS["p1"])))
    assert [(action.to, action.skipped) for action in sent] == [("a1", ()), ("x2", ("a2",))]

    # With a1 gone too, the first portion has no aggregator left: its resend
    # stays addressed to a1 instead of reaching the learner alone.
    rerouted = sends(node.receive(status("a1", Liveness.OFFLINE)))
    assert [action.to for action in rerouted] == ["a1"]
    assert [action.to for action in sends(node.retry_due(1))] == ["a1", "x2"]


def test_provider_skips_round_without_aggregator(
    paillier: Paillier,
) -> None:
    node = split_provider(paillier)
    node.receive(status("a2", Liveness.OFFLINE))
    node.receive(status("x2", Liveness.OFFLINE))

    actions = node.own_portions_ready(1, portions_of(paillier, VECTORS["p1"]))

    assert len(actions) == 1
    assert isinstance(actions[0], Dropped)
    assert "portion 1 (a2, x2) is offline" in str(actions[0].error)
    assert node.state is NodeState.FORWARDED
    assert node.retry_due(1) == []


def test_split_provider_rejects_a_whole_contribution(paillier: Paillier) -> None:
    node = split_provider(paillier)

    with pytest.raises(ProtocolError, match="own_portions_ready"):
        node.own_contribution_ready(1, paillier.encrypt(VECTORS["p1"]))
    with pytest.raises(ProtocolError, match="expected 2 portions, got 3"):
        node.own_portions_ready(1, portions_of(paillier, VECTORS["p1"], count=3))
    assert node.state is NodeState.COLLECTING


def test_portion_paths_need_a_node_without_inputs() -> None:
    with pytest.raises(ValueError, match="without inputs"):
        chain_config(portion_paths=PATHS)


# The learner's side: p1, p2 and p3 each send portion 0 through a1 and
# portion 1 through a2 -> x2; x2 sends to the learner.
ROUTES = {provider: (frozenset({"a1"}), frozenset({"a2", "x2"})) for provider in ("p1", "p2", "p3")}


def split_learner(paillier: Paillier, **changes: object) -> LearnerProtocol:
    settings: dict[str, object] = {
        "inputs": {"a1": frozenset(ROUTES), "x2": frozenset(ROUTES)},
        "rerouted_inputs": {"a2": frozenset(ROUTES)},
        "feeders": {"a1": frozenset(ROUTES), "x2": frozenset({"a2"}), "a2": frozenset(ROUTES)},
        "providers": tuple(ROUTES),
        "portion_routes": ROUTES,
        **changes,
    }
    return started(paillier, **settings)


def started(paillier: Paillier, **settings: object) -> LearnerProtocol:
    learner = LearnerProtocol(
        learner_config(**settings), run=RUN, public_key=paillier.public_key, theta=np.array(THETA0)
    )
    learner.start()
    return learner


def aggregated(
    paillier: Paillier,
    sender: str,
    providers: Sequence[str],
    portion: int,
    split: dict[str, list[list[int]]],
) -> Contribution:
    total = split[providers[0]][portion]
    for provider in providers[1:]:
        total = add_vectors(paillier.public_key, total, split[provider][portion])
    return Contribution(
        job=JOB,
        run=RUN,
        round=1,
        sender=sender,
        contributors=tuple(providers),
        ciphertexts=tuple(total),
    )


@pytest.fixture
def split(paillier: Paillier) -> dict[str, list[list[int]]]:
    # With randomisation off each provider sends [g_1, g_2, 1].
    return {provider: portions_of(paillier, (*VECTORS[provider][:2], 1.0)) for provider in ROUTES}


def test_learner_decrypts_the_sum_of_all_portions(
    paillier: Paillier, split: dict[str, list[list[int]]]
) -> None:
    learner = split_learner(paillier)

    assert learner.receive(aggregated(paillier, "a1", ["p1", "p2", "p3"], 0, split)) == []
    actions = learner.receive(aggregated(paillier, "x2", ["p1", "p2", "p3"], 1, split))

    assert len(actions) == 1
    assert isinstance(actions[0], DecryptTotal)
    assert actions[0].contributors == ("p1", "p2", "p3")
    decrypted = paillier.decrypt(actions[0].ciphertexts, contributors=3)
    expected = np.sum([(*VECTORS[p][:2], 1.0) for p in ROUTES], axis=0)
    assert decrypted.tolist() == expected.tolist()


def test_learner_awaits_every_portion(
    paillier: Paillier, split: dict[str, list[list[int]]]
) -> None:
    learner = split_learner(paillier)
    learner.receive(aggregated(paillier, "a1", ["p1", "p2", "p3"], 0, split))

    assert learner.awaited == frozenset({"x2"})


def test_missing_portion_fails_round(paillier: Paillier, split: dict[str, list[list[int]]]) -> None:
    learner = split_learner(paillier, min_contributors=2)
    learner.receive(aggregated(paillier, "a1", ["p1", "p2", "p3"], 0, split))

    # x2 is the last input, so its sum closes the round without p3's second portion.
    actions = learner.receive(aggregated(paillier, "x2", ["p1", "p2"], 1, split))

    assert isinstance(actions[0], RoundFailed)
    assert "providers ['p3']" in actions[0].reason
    assert "portions [[1]]" in actions[0].reason
    assert not any(isinstance(action, DecryptTotal) for action in actions)


def test_portion_counted_twice_is_duplicate(
    paillier: Paillier, split: dict[str, list[list[int]]]
) -> None:
    learner = split_learner(paillier)
    learner.receive(aggregated(paillier, "x2", ["p1", "p2"], 1, split))

    with pytest.raises(DuplicateMessageError, match=r"\['p2'\] are already in this round's total"):
        learner.receive(aggregated(paillier, "a2", ["p2"], 1, split))


def test_split_provider_direct_send_rejected(
    paillier: Paillier, split: dict[str, list[list[int]]]
) -> None:
    learner = split_learner(
        paillier, rerouted_inputs={"a2": frozenset(ROUTES), "p1": frozenset({"p1"})}
    )

    with pytest.raises(ProtocolError, match="sends no portion through it"):
        learner.receive(
            Contribution(
                job=JOB,
                run=RUN,
                round=1,
                sender="p1",
                contributors=("p1",),
                ciphertexts=tuple(split["p1"][0]),
            )
        )


def test_round_leaves_out_blocked_providers(
    paillier: Paillier,
) -> None:
    routes = {
        "p1": (frozenset({"a1"}), frozenset({"a2"})),
        "p2": (frozenset({"a2"}), frozenset({"a3"})),
        "p3": (frozenset({"a3"}), frozenset({"a1"})),
        "p4": (frozenset({"a1"}), frozenset({"a2"})),
    }
    learner = started(
        paillier,
        inputs={name: frozenset(routes) for name in ("a1", "a2", "a3")},
        providers=tuple(routes),
        portion_routes=routes,
        min_contributors=2,
    )
    learner.receive(status("a3", Liveness.OFFLINE))

    # Round 1 gets nothing; the repeat, opened after a3 went offline, samples only p1 and p4.
    actions = learner.round_timed_out(1)

    start = next(a.message for a in actions if isinstance(a, PublishRound))
    assert isinstance(start, RoundStart)
    assert start.participants == ("p1", "p4")
    assert learner.awaited == frozenset({"a1", "a2"})


def test_round_keeps_providers_when_too_few(
    paillier: Paillier,
) -> None:
    learner = started(
        paillier,
        inputs={"a1": frozenset(ROUTES), "a2": frozenset(ROUTES)},
        providers=tuple(ROUTES),
        portion_routes={p: (frozenset({"a1"}), frozenset({"a2"})) for p in ROUTES},
    )
    learner.receive(status("a2", Liveness.OFFLINE))

    actions = learner.round_timed_out(1)

    start = next(a.message for a in actions if isinstance(a, PublishRound))
    assert isinstance(start, RoundStart)
    assert start.participants is None


def test_aggregator_stops_awaiting_blocked_provider(
    paillier: Paillier,
) -> None:
    # a2 collects portion 1 of p1 and p2; p1's portion 0 goes through a1 alone.
    routes = {
        "p1": (frozenset({"a1"}), frozenset({"a2"})),
        "p2": (frozenset({"a3"}), frozenset({"a2"})),
    }
    node = NodeProtocol(
        chain_config(
            node_id="a2",
            successor="learner",
            inputs={"p1": frozenset({"p1"}), "p2": frozenset({"p2"})},
            is_provider=False,
            portion_routes=routes,
        )
    )
    node.receive(round_start(paillier))
    node.receive(
        Contribution(
            job=JOB,
            run=RUN,
            round=1,
            sender="p2",
            contributors=("p2",),
            ciphertexts=tuple(portions_of(paillier, VECTORS["p2"])[1]),
        )
    )
    assert node.awaited == frozenset({"p1"})

    # p1 sends no portion once a1 is offline, so a2 forwards what it has at once.
    sent = sends(node.receive(status("a1", Liveness.OFFLINE)))

    assert [action.message.contributors for action in sent] == [("p2",)]
    assert node.awaited == frozenset()


def test_learner_fails_round_when_aggregator_dies(
    paillier: Paillier, split: dict[str, list[list[int]]]
) -> None:
    # Portion 0 of every provider goes through a1, portion 1 through a2 -> x2.
    learner = split_learner(paillier, min_contributors=2)
    learner.receive(aggregated(paillier, "x2", ["p1", "p2", "p3"], 1, split))
    assert learner.awaited == frozenset({"a1"})

    actions = learner.receive(status("a1", Liveness.OFFLINE))

    assert isinstance(actions[0], RoundFailed)
    assert "portions [[0], [0], [0]]" in actions[0].reason
