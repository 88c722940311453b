"""Tests for gradchain.protocol.node."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from gradchain.crypto import generate_keypair
from gradchain.errors import DuplicateMessageError, ProtocolError, StaleMessageError
from gradchain.protocol.events import (
    Action,
    ComputeContribution,
    Dropped,
    Finished,
    SendContribution,
)
from gradchain.protocol.messages import Contribution, JobDone, Liveness, Message, RoundStart, Status
from gradchain.protocol.node import NodeConfig, NodeProtocol, NodeState
from tests.protocol.conftest import KEY_BITS

if TYPE_CHECKING:
    from tests.protocol.conftest import Paillier

JOB = "job-1"
RUN = "0123456789abcdef"
NEXT_RUN = "fedcba9876543210"
PARAMETERS = 2
CIPHERTEXT_COUNT = PARAMETERS + 1
THETA = (0.25, -0.5)

# Plaintext vectors [a*g_1, a*g_2, a]. Every value is a multiple of 2**-32, so
# the encoding represents it exactly and decrypted sums compare with ==.
VECTOR_P1 = (0.5, -1.25, 0.75)
VECTOR_P2 = (2.0, 0.125, 0.5)
VECTOR_P3 = (-3.5, 4.0, 1.0)
VECTOR_P4 = (0.0625, -0.0625, 0.25)


def chain_config(**changes: Any) -> NodeConfig:
    """Return the config of provider p2 in the middle of the chain p1 -> p2 -> p3."""
    config = NodeConfig(
        job=JOB,
        node_id="p2",
        successor="p3",
        inputs={"p1": frozenset({"p1"})},
        is_provider=True,
        parameters=PARAMETERS,
        ciphertext_count=CIPHERTEXT_COUNT,
        key_bits=KEY_BITS,
    )
    return replace(config, **changes)


def aggregator_config(**changes: Any) -> NodeConfig:
    """Return the config of an aggregator without data fed by inputs a, b and c."""
    config = NodeConfig(
        job=JOB,
        node_id="agg",
        successor="learner",
        inputs={"a": frozenset({"p1"}), "b": frozenset({"p2", "p3"}), "c": frozenset({"p4"})},
        is_provider=False,
        parameters=PARAMETERS,
        ciphertext_count=CIPHERTEXT_COUNT,
        key_bits=KEY_BITS,
    )
    return replace(config, **changes)


def round_start(
    paillier: Paillier,
    *,
    round: int = 1,
    run: str = RUN,
    job: str = JOB,
    theta: tuple[float, ...] = THETA,
    public_key: int | None = None,
) -> RoundStart:
    return RoundStart(
        job=job,
        run=run,
        round=round,
        theta=theta,
        public_key=paillier.public_key.n if public_key is None else public_key,
        timeout=60.0,
    )


def contribution(
    sender: str,
    contributors: Sequence[str],
    ciphertexts: Sequence[int],
    *,
    round: int = 1,
    run: str = RUN,
    job: str = JOB,
) -> Contribution:
    return Contribution(
        job=job,
        run=run,
        round=round,
        sender=sender,
        contributors=tuple(contributors),
        ciphertexts=tuple(ciphertexts),
    )


def forwarded_message(actions: list[Action], to: str) -> Contribution:
    """Return the one contribution in ``actions``, checking it goes to ``to``."""
    assert len(actions) == 1, actions
    action = actions[0]
    assert isinstance(action, SendContribution), action
    assert action.to == to
    return action.message


def decrypted(paillier: Paillier, message: Contribution) -> list[float]:
    """Decrypt a forwarded sum, decoded for the number of contributors the message names."""
    totals = paillier.decrypt(message.ciphertexts, contributors=len(message.contributors))
    return [float(value) for value in totals]


def plaintext_sum(*vectors: Sequence[float]) -> list[float]:
    return [float(x) for x in np.sum(np.array(vectors), axis=0)]


def started_chain_node(paillier: Paillier, **changes: Any) -> NodeProtocol:
    node = NodeProtocol(chain_config(**changes))
    node.receive(round_start(paillier))
    return node


def started_aggregator(paillier: Paillier, **changes: Any) -> NodeProtocol:
    node = NodeProtocol(aggregator_config(**changes))
    node.receive(round_start(paillier))
    return node


def finish_chain_round(node: NodeProtocol, paillier: Paillier, round: int = 1) -> Contribution:
    """Deliver valid p1 and p2 contributions for ``round`` and return what the node forwards."""
    assert node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1), round=round)) == []
    return forwarded_message(
        node.own_contribution_ready(round, paillier.encrypt(VECTOR_P2)), to="p3"
    )


# Forwarding


def test_round_start_requests_own_contribution(paillier: Paillier) -> None:
    node = NodeProtocol(chain_config())

    actions = node.receive(round_start(paillier, theta=(1.5, -2.0)))

    assert actions == [
        ComputeContribution(round=1, theta=(1.5, -2.0), public_key=paillier.public_key.n)
    ]
    assert node.state is NodeState.COLLECTING
    assert node.round == 1
    assert node.run == RUN


@pytest.mark.parametrize(
    "own_first", [pytest.param(True, id="own-first"), pytest.param(False, id="input-first")]
)
def test_chain_node_forwards_once_after_both_parts(paillier: Paillier, own_first: bool) -> None:
    node = started_chain_node(paillier)
    own = paillier.encrypt(VECTOR_P2)
    received = contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1))

    if own_first:
        first = node.own_contribution_ready(1, own)
        second = node.receive(received)
    else:
        first = node.receive(received)
        second = node.own_contribution_ready(1, own)

    assert first == []
    message = forwarded_message(second, to="p3")
    assert message.job == JOB
    assert message.run == RUN
    assert message.round == 1
    assert message.sender == "p2"
    assert message.contributors == ("p1", "p2")
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)
    assert node.state is NodeState.FORWARDED


def test_chain_node_forwards_nothing_more_after_forwarding(paillier: Paillier) -> None:
    node = started_chain_node(paillier)
    finish_chain_round(node, paillier)

    with pytest.raises(DuplicateMessageError):
        node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1)))
    with pytest.raises(StaleMessageError):
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P2))
    assert node.state is NodeState.FORWARDED


def test_chain_head_forwards_own_contribution_alone(paillier: Paillier) -> None:
    node = NodeProtocol(chain_config(node_id="p1", successor="p2", inputs={}))
    node.receive(round_start(paillier))

    message = forwarded_message(
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P1)), to="p2"
    )

    assert message.sender == "p1"
    assert message.contributors == ("p1",)
    assert decrypted(paillier, message) == list(VECTOR_P1)


def test_chain_node_forwards_union_of_contributors(paillier: Paillier) -> None:
    # p3 follows p1 -> p2, so its input p2 carries the contributions of p1 and p2.
    node = NodeProtocol(
        chain_config(node_id="p3", successor="learner", inputs={"p2": frozenset({"p1", "p2"})})
    )
    node.receive(round_start(paillier))
    upstream = [a + b for a, b in zip(VECTOR_P1, VECTOR_P2, strict=True)]

    node.receive(contribution("p2", ["p1", "p2"], paillier.encrypt(upstream)))
    message = forwarded_message(
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P3)), to="learner"
    )

    assert message.contributors == ("p1", "p2", "p3")
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2, VECTOR_P3)


def test_aggregator_round_start_requests_nothing(paillier: Paillier) -> None:
    node = NodeProtocol(aggregator_config())

    actions = node.receive(round_start(paillier))

    assert actions == []
    assert node.state is NodeState.COLLECTING


AGGREGATOR_INPUTS = {
    "a": (["p1"], VECTOR_P1),
    "b": (["p2", "p3"], plaintext_sum(VECTOR_P2, VECTOR_P3)),
    "c": (["p4"], VECTOR_P4),
}


@pytest.mark.parametrize(
    "order",
    [pytest.param(order, id="-".join(order)) for order in itertools.permutations("abc")],
)
def test_aggregator_waits_for_every_input(paillier: Paillier, order: tuple[str, ...]) -> None:
    node = started_aggregator(paillier)
    messages = {
        sender: contribution(sender, contributors, paillier.encrypt(values))
        for sender, (contributors, values) in AGGREGATOR_INPUTS.items()
    }

    assert node.receive(messages[order[0]]) == []
    assert node.receive(messages[order[1]]) == []
    message = forwarded_message(node.receive(messages[order[2]]), to="learner")

    assert message.sender == "agg"
    assert message.contributors == ("p1", "p2", "p3", "p4")
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2, VECTOR_P3, VECTOR_P4)


def test_aggregator_rejects_own_contribution(paillier: Paillier) -> None:
    node = started_aggregator(paillier)

    with pytest.raises(ProtocolError, match="holds no data"):
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P1))


def test_status_message_changes_nothing(paillier: Paillier) -> None:
    node = started_chain_node(paillier)

    actions = node.receive(Status(job=JOB, node="p1", state=Liveness.OFFLINE, instance=RUN))

    assert actions == []
    assert node.state is NodeState.COLLECTING


# Duplicates and contributors counted twice


def test_duplicate_contribution_counted_once(paillier: Paillier) -> None:
    node = started_chain_node(paillier)
    node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1)))

    with pytest.raises(DuplicateMessageError, match="already counted") as caught:
        node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1)))
    message = forwarded_message(
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P2)), to="p3"
    )

    assert caught.value.sender == "p1"
    assert caught.value.round == 1
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


def test_duplicate_own_contribution_counted_once(paillier: Paillier) -> None:
    node = started_chain_node(paillier)
    node.own_contribution_ready(1, paillier.encrypt(VECTOR_P2))

    with pytest.raises(DuplicateMessageError, match="computed twice"):
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P2))
    message = forwarded_message(
        node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1))), to="p3"
    )

    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


def test_overlapping_contributors_rejected(paillier: Paillier) -> None:
    node = started_aggregator(
        paillier,
        inputs={"a": frozenset({"p1", "p2"}), "b": frozenset({"p2", "p3"})},
    )
    node.receive(
        contribution("a", ["p1", "p2"], paillier.encrypt(plaintext_sum(VECTOR_P1, VECTOR_P2)))
    )

    with pytest.raises(DuplicateMessageError, match=r"\['p2'\] are already in this round's sum"):
        node.receive(
            contribution("b", ["p2", "p3"], paillier.encrypt(plaintext_sum(VECTOR_P2, VECTOR_P3)))
        )
    message = forwarded_message(
        node.receive(contribution("b", ["p3"], paillier.encrypt(VECTOR_P3))), to="learner"
    )

    assert message.contributors == ("p1", "p2", "p3")
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2, VECTOR_P3)


# Messages from the wrong place


@pytest.mark.parametrize(
    "sender",
    [
        pytest.param("p3", id="successor"),
        pytest.param("p2", id="node-itself"),
        pytest.param("p9", id="unknown-node"),
        pytest.param("learner", id="learner"),
    ],
)
def test_sender_that_is_not_input_rejected(paillier: Paillier, sender: str) -> None:
    node = started_chain_node(paillier)

    with pytest.raises(ProtocolError, match="is not an input of node p2") as caught:
        node.receive(contribution(sender, ["p1"], paillier.encrypt(VECTOR_P1)))

    assert caught.value.sender == sender
    assert finish_chain_round(node, paillier).contributors == ("p1", "p2")


def test_non_input_rejected_before_round_start(paillier: Paillier) -> None:
    node = NodeProtocol(chain_config())

    with pytest.raises(ProtocolError, match="is not an input"):
        node.receive(contribution("p9", ["p1"], paillier.encrypt(VECTOR_P1)))


@pytest.mark.parametrize(
    "contributors",
    [
        pytest.param(["p0"], id="other-provider"),
        pytest.param(["p1", "p0"], id="one-extra"),
        pytest.param(["p2"], id="node-itself"),
        pytest.param(["p3"], id="successor"),
    ],
)
def test_unreachable_contributors_rejected(paillier: Paillier, contributors: list[str]) -> None:
    node = started_chain_node(paillier)

    with pytest.raises(ProtocolError, match="cannot reach this node through 'p1'"):
        node.receive(contribution("p1", contributors, paillier.encrypt(VECTOR_P1)))

    message = finish_chain_round(node, paillier)
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


# Ciphertexts outside Z*_{n^2} for the learner's key

InvalidCiphertext = Callable[["Paillier"], int]

INVALID_CIPHERTEXTS = [
    pytest.param(lambda paillier: paillier.public_key.nsquare, id="n-squared"),
    pytest.param(lambda paillier: paillier.public_key.nsquare + 1, id="above-n-squared"),
    pytest.param(lambda paillier: paillier.private_key.p, id="p"),
    pytest.param(lambda paillier: 7 * paillier.private_key.q, id="multiple-of-q"),
    pytest.param(lambda paillier: paillier.public_key.n, id="n"),
    pytest.param(lambda paillier: 3 * paillier.public_key.n, id="multiple-of-n"),
]


@pytest.mark.parametrize("invalid", INVALID_CIPHERTEXTS)
@pytest.mark.parametrize(
    "slot", [pytest.param(0, id="first-slot"), pytest.param(-1, id="last-slot")]
)
def test_invalid_ciphertext_rejected(
    paillier: Paillier, invalid: InvalidCiphertext, slot: int
) -> None:
    node = started_chain_node(paillier)
    ciphertexts = list(paillier.encrypt(VECTOR_P1))
    ciphertexts[slot] = invalid(paillier)

    with pytest.raises(ProtocolError, match=r"is not in Z\*_\(n\^2\)"):
        node.receive(contribution("p1", ["p1"], ciphertexts))

    message = finish_chain_round(node, paillier)
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


@pytest.mark.parametrize(
    "invalid",
    [
        *INVALID_CIPHERTEXTS,
        pytest.param(lambda paillier: 0, id="zero"),
        pytest.param(lambda paillier: -5, id="negative"),
    ],
)
def test_invalid_own_ciphertext_rejected(paillier: Paillier, invalid: InvalidCiphertext) -> None:
    node = started_chain_node(paillier)
    ciphertexts = list(paillier.encrypt(VECTOR_P2))
    ciphertexts[1] = invalid(paillier)

    with pytest.raises(ProtocolError, match=r"ciphertext 1 is not in Z\*_\(n\^2\)"):
        node.own_contribution_ready(1, ciphertexts)

    message = finish_chain_round(node, paillier)
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(CIPHERTEXT_COUNT - 1, id="one-short"),
        pytest.param(CIPHERTEXT_COUNT + 1, id="one-long"),
    ],
)
def test_contribution_of_wrong_length_rejected(paillier: Paillier, length: int) -> None:
    node = started_chain_node(paillier)
    ciphertexts = paillier.encrypt([0.5] * length)

    with pytest.raises(
        ProtocolError, match=f"expected {CIPHERTEXT_COUNT} ciphertexts, got {length}"
    ):
        node.receive(contribution("p1", ["p1"], ciphertexts))
    with pytest.raises(
        ProtocolError, match=f"expected {CIPHERTEXT_COUNT} ciphertexts, got {length}"
    ):
        node.own_contribution_ready(1, ciphertexts)

    message = finish_chain_round(node, paillier)
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


# Stale messages: another job, another run, an old round


def test_message_for_another_job_is_stale(paillier: Paillier) -> None:
    node = started_chain_node(paillier)
    messages: list[Message] = [
        round_start(paillier, round=2, job="job-2"),
        contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1), job="job-2"),
        JobDone(job="job-2", run=RUN, round=1, theta=THETA, reason="converged"),
        Status(job="job-2", node="p1", state=Liveness.ONLINE, instance=RUN),
    ]

    for message in messages:
        with pytest.raises(StaleMessageError, match="for job 'job-2'"):
            node.receive(message)

    assert node.state is NodeState.COLLECTING
    assert node.round == 1
    message = finish_chain_round(node, paillier)
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


def test_contribution_for_old_round_is_stale(paillier: Paillier) -> None:
    node = started_chain_node(paillier)
    node.receive(round_start(paillier, round=2))

    with pytest.raises(StaleMessageError, match="round already closed") as caught:
        node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1), round=1))

    assert caught.value.round == 1
    message = finish_chain_round(node, paillier, round=2)
    assert message.round == 2
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


def test_round_start_for_old_round_is_stale(paillier: Paillier) -> None:
    node = started_chain_node(paillier)
    node.receive(round_start(paillier, round=3))

    with pytest.raises(StaleMessageError, match="round already closed"):
        node.receive(round_start(paillier, round=2))

    assert node.round == 3


def test_repeated_round_start_is_duplicate(paillier: Paillier) -> None:
    node = started_chain_node(paillier)
    node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1)))

    with pytest.raises(DuplicateMessageError, match="round already started"):
        node.receive(round_start(paillier))

    # The contribution received before the repeat still counts.
    message = forwarded_message(
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P2)), to="p3"
    )
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


def test_own_contribution_before_round_start_is_stale(paillier: Paillier) -> None:
    node = NodeProtocol(chain_config())

    with pytest.raises(StaleMessageError):
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P2))

    assert node.state is NodeState.IDLE


# A new RoundStart abandons the previous round


def test_new_round_start_abandons_previous_round(paillier: Paillier) -> None:
    node = started_chain_node(paillier)
    node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P3)))

    actions = node.receive(round_start(paillier, round=2, theta=(1.0, 2.0)))

    assert actions == [
        ComputeContribution(round=2, theta=(1.0, 2.0), public_key=paillier.public_key.n)
    ]
    with pytest.raises(StaleMessageError, match="own contribution for round 1"):
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P4))
    # The round 1 contribution of p1 must not be part of the round 2 sum.
    assert node.own_contribution_ready(2, paillier.encrypt(VECTOR_P2)) == []
    message = forwarded_message(
        node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1), round=2)), to="p3"
    )
    assert message.round == 2
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


def test_round_start_after_forwarding_opens_next_round(paillier: Paillier) -> None:
    node = started_chain_node(paillier)
    finish_chain_round(node, paillier)

    actions = node.receive(round_start(paillier, round=2))

    assert actions == [ComputeContribution(round=2, theta=THETA, public_key=paillier.public_key.n)]
    message = finish_chain_round(node, paillier, round=2)
    assert message.round == 2
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


def test_round_start_of_new_run_resets_round(paillier: Paillier) -> None:
    node = started_chain_node(paillier)
    node.receive(round_start(paillier, round=5))

    actions = node.receive(round_start(paillier, round=1, run=NEXT_RUN))

    assert actions == [ComputeContribution(round=1, theta=THETA, public_key=paillier.public_key.n)]
    assert node.run == NEXT_RUN
    assert node.round == 1


# RoundStart checks against the topology


def test_round_start_wrong_key_size_rejected(paillier: Paillier) -> None:
    other_public_key, _ = generate_keypair(KEY_BITS - 2)
    node = NodeProtocol(chain_config())

    with pytest.raises(
        ProtocolError, match=f"has {KEY_BITS - 2} bits, the topology says {KEY_BITS}"
    ):
        node.receive(round_start(paillier, public_key=other_public_key.n))

    assert node.state is NodeState.IDLE
    assert node.round == 0
    assert node.public_key is None
    assert len(node.receive(round_start(paillier))) == 1


@pytest.mark.parametrize(
    "theta",
    [pytest.param((0.5,), id="one-short"), pytest.param((0.5, 0.5, 0.5), id="one-long")],
)
def test_round_start_wrong_theta_length_rejected(
    paillier: Paillier, theta: tuple[float, ...]
) -> None:
    node = NodeProtocol(chain_config())

    with pytest.raises(
        ProtocolError, match=f"theta has {len(theta)} parameters, the topology says {PARAMETERS}"
    ):
        node.receive(round_start(paillier, theta=theta))

    assert node.state is NodeState.IDLE
    assert node.round == 0


def test_round_start_with_unpinned_key_rejected(paillier: Paillier) -> None:
    node = NodeProtocol(chain_config(key_fingerprint="0" * 16))

    with pytest.raises(ProtocolError, match="does not match the pinned 0000000000000000"):
        node.receive(round_start(paillier))

    assert node.state is NodeState.IDLE


def test_round_start_with_pinned_key_accepted(paillier: Paillier) -> None:
    node = NodeProtocol(chain_config(key_fingerprint=paillier.public_key.fingerprint))

    actions = node.receive(round_start(paillier))

    assert len(actions) == 1
    assert node.state is NodeState.COLLECTING


def test_round_start_rejected_mid_round_keeps_round(paillier: Paillier) -> None:
    node = started_chain_node(paillier)
    node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1)))

    with pytest.raises(ProtocolError, match="theta has 1 parameters"):
        node.receive(round_start(paillier, round=2, theta=(0.5,)))

    assert node.round == 1
    message = forwarded_message(
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P2)), to="p3"
    )
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


# Contributions that overtake their RoundStart


def test_early_contribution_used_once_round_starts(paillier: Paillier) -> None:
    node = NodeProtocol(chain_config())

    assert node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1))) == []
    actions = node.receive(round_start(paillier))

    assert actions == [ComputeContribution(round=1, theta=THETA, public_key=paillier.public_key.n)]
    message = forwarded_message(
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P2)), to="p3"
    )
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


def test_early_contributions_complete_aggregator(paillier: Paillier) -> None:
    node = NodeProtocol(aggregator_config())
    for sender, (contributors, values) in AGGREGATOR_INPUTS.items():
        assert node.receive(contribution(sender, contributors, paillier.encrypt(values))) == []

    message = forwarded_message(node.receive(round_start(paillier)), to="learner")

    assert message.contributors == ("p1", "p2", "p3", "p4")
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2, VECTOR_P3, VECTOR_P4)


def test_early_contribution_for_next_round_waits_for_it(paillier: Paillier) -> None:
    node = started_chain_node(paillier)

    assert node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P3), round=2)) == []
    finish_chain_round(node, paillier, round=1)
    node.receive(round_start(paillier, round=2))
    message = forwarded_message(
        node.own_contribution_ready(2, paillier.encrypt(VECTOR_P2)), to="p3"
    )

    assert message.round == 2
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P3, VECTOR_P2)


def test_early_contribution_of_another_run_dropped(paillier: Paillier) -> None:
    node = NodeProtocol(chain_config())
    node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P3), run=NEXT_RUN))

    node.receive(round_start(paillier))

    assert node.own_contribution_ready(1, paillier.encrypt(VECTOR_P2)) == []
    message = forwarded_message(
        node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1))), to="p3"
    )
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


def test_early_contribution_buffered_twice_is_duplicate(paillier: Paillier) -> None:
    node = NodeProtocol(chain_config())
    node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1)))

    with pytest.raises(DuplicateMessageError, match="already buffered"):
        node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P3)))

    node.receive(round_start(paillier))
    message = forwarded_message(
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P2)), to="p3"
    )
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


def test_early_contributions_beyond_limit_rejected(paillier: Paillier) -> None:
    node = NodeProtocol(chain_config())
    ciphertexts = paillier.encrypt(VECTOR_P1)
    for round_number in range(1, NodeProtocol.MAX_EARLY + 1):
        node.receive(contribution("p1", ["p1"], ciphertexts, round=round_number))

    with pytest.raises(StaleMessageError, match="too many contributions"):
        node.receive(contribution("p1", ["p1"], ciphertexts, round=NodeProtocol.MAX_EARLY + 1))


@pytest.mark.parametrize(
    "early",
    [
        pytest.param(
            lambda paillier: contribution(
                "p1", ["p1"], [paillier.public_key.nsquare] * CIPHERTEXT_COUNT
            ),
            id="invalid-ciphertext",
        ),
        pytest.param(
            lambda paillier: contribution(
                "p1", ["p1"], paillier.encrypt([0.5] * (CIPHERTEXT_COUNT + 1))
            ),
            id="wrong-length",
        ),
        pytest.param(
            lambda paillier: contribution("p1", ["p0"], paillier.encrypt(VECTOR_P1)),
            id="unreachable-contributor",
        ),
    ],
)
def test_invalid_early_contribution_dropped_at_start(
    paillier: Paillier, early: Callable[[Paillier], Contribution]
) -> None:
    # The key that validates ciphertexts is only known at RoundStart, so an
    # early contribution can only be checked then. A bad one must be dropped
    # without losing the request for the node's own contribution.
    node = NodeProtocol(chain_config())
    node.receive(early(paillier))

    actions = node.receive(round_start(paillier))

    assert actions[0] == ComputeContribution(round=1, theta=THETA, public_key=paillier.public_key.n)
    assert len(actions) == 2
    assert isinstance(actions[1], Dropped)
    assert isinstance(actions[1].error, ProtocolError)
    message = finish_chain_round(node, paillier)
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


# JobDone


def test_job_done_finishes_node(paillier: Paillier) -> None:
    node = started_chain_node(paillier)

    actions = node.receive(JobDone(job=JOB, run=RUN, round=1, theta=THETA, reason="converged"))

    assert actions == [Finished(reason="converged")]
    assert node.state is NodeState.FINISHED
    with pytest.raises(StaleMessageError, match="the job has finished here"):
        node.receive(round_start(paillier, round=2))
    with pytest.raises(StaleMessageError):
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P2))


def test_job_done_after_forwarding_finishes_node(paillier: Paillier) -> None:
    node = started_chain_node(paillier)
    finish_chain_round(node, paillier)

    actions = node.receive(
        JobDone(job=JOB, run=RUN, round=1, theta=THETA, reason="reached the round limit of 1")
    )

    assert actions == [Finished(reason="reached the round limit of 1")]
    assert node.state is NodeState.FINISHED


def test_job_done_before_joining_run_dropped(paillier: Paillier) -> None:
    node = NodeProtocol(chain_config())

    with pytest.raises(StaleMessageError, match="never joined"):
        node.receive(JobDone(job=JOB, run=NEXT_RUN, round=40, theta=THETA, reason="converged"))

    assert node.state is NodeState.IDLE
    assert node.receive(round_start(paillier)) == [
        ComputeContribution(round=1, theta=THETA, public_key=paillier.public_key.n)
    ]


def test_job_done_for_another_run_dropped(paillier: Paillier) -> None:
    node = started_chain_node(paillier)

    with pytest.raises(StaleMessageError, match="another run"):
        node.receive(JobDone(job=JOB, run=NEXT_RUN, round=40, theta=THETA, reason="converged"))

    assert node.state is NodeState.COLLECTING
    message = finish_chain_round(node, paillier)
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


def test_repeated_job_done_raises_protocol_error(paillier: Paillier) -> None:
    # MQTT QoS 1 may deliver the retained JobDone twice. The repeat is a
    # message that does not fit, so it must raise a ProtocolError like one.
    node = started_chain_node(paillier)
    done = JobDone(job=JOB, run=RUN, round=1, theta=THETA, reason="converged")
    node.receive(done)

    with pytest.raises(ProtocolError):
        node.receive(done)

    assert node.state is NodeState.FINISHED


# An invalid message leaves the round as it was


@pytest.mark.parametrize(
    "invalid",
    [
        pytest.param(
            lambda paillier: contribution(
                "p1", ["p1"], [paillier.private_key.p, *paillier.encrypt(VECTOR_P3)[1:]]
            ),
            id="ciphertext-shares-factor",
        ),
        pytest.param(
            lambda paillier: contribution("p1", ["p1"], paillier.encrypt(VECTOR_P3)[:-1]),
            id="too-few-ciphertexts",
        ),
        pytest.param(
            lambda paillier: contribution("p1", ["p0"], paillier.encrypt(VECTOR_P3)),
            id="unreachable-contributor",
        ),
        pytest.param(
            lambda paillier: contribution("p9", ["p1"], paillier.encrypt(VECTOR_P3)),
            id="unknown-sender",
        ),
        pytest.param(
            lambda paillier: contribution("p1", ["p1"], paillier.encrypt(VECTOR_P3), job="job-2"),
            id="another-job",
        ),
        pytest.param(
            lambda paillier: round_start(paillier, round=2, theta=(0.5,)),
            id="round-start-wrong-theta",
        ),
    ],
)
def test_invalid_message_leaves_state_unchanged(
    paillier: Paillier, invalid: Callable[[Paillier], Contribution | RoundStart]
) -> None:
    node = started_chain_node(paillier)
    node.own_contribution_ready(1, paillier.encrypt(VECTOR_P2))
    before = (node.state, node.run, node.round, node.public_key)

    with pytest.raises(ProtocolError):
        node.receive(invalid(paillier))

    assert (node.state, node.run, node.round, node.public_key) == before
    message = forwarded_message(
        node.receive(contribution("p1", ["p1"], paillier.encrypt(VECTOR_P1))), to="p3"
    )
    assert message.contributors == ("p1", "p2")
    assert decrypted(paillier, message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


# A key pinned from the learner's public key file


def test_round_start_under_foreign_key_rejected(paillier: Paillier) -> None:
    foreign, _ = generate_keypair(KEY_BITS)
    node = NodeProtocol(chain_config(pinned_key=paillier.public_key))

    with pytest.raises(ProtocolError, match="not the learner's key"):
        node.receive(replace(round_start(paillier), public_key=foreign.n, public_key_hs=foreign.hs))

    assert node.state is NodeState.IDLE
    genuine = replace(round_start(paillier), public_key_hs=paillier.public_key.hs)
    actions = node.receive(genuine)
    assert actions[0] == ComputeContribution(
        round=1,
        theta=THETA,
        public_key=paillier.public_key.n,
        public_key_hs=paillier.public_key.hs,
    )


def test_round_start_with_foreign_hs_rejected(paillier: Paillier) -> None:
    # An h_s whose discrete logarithm the sender knows lets it strip obfuscators.
    node = NodeProtocol(chain_config(pinned_key=paillier.public_key))
    n = paillier.public_key.n
    chosen = pow(2, n, n * n)

    with pytest.raises(ProtocolError, match="not the learner's key"):
        node.receive(replace(round_start(paillier), public_key_hs=chosen))

    assert node.state is NodeState.IDLE


def test_round_start_other_settings_rejected(paillier: Paillier) -> None:
    node = NodeProtocol(chain_config(settings_digest="0123456789abcdef"))
    other = replace(round_start(paillier), settings="fedcba9876543210")

    with pytest.raises(ProtocolError, match="run every node with the learner's topology file"):
        node.receive(other)
    assert node.state is NodeState.IDLE

    same = replace(round_start(paillier), settings="0123456789abcdef")
    assert any(isinstance(action, ComputeContribution) for action in node.receive(same))
