"""Tests for the fault handling of gradchain.protocol.node: Acks, resends, deadlines, rerouting, participants."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from gradchain.errors import DuplicateMessageError, ProtocolError, StaleMessageError
from gradchain.protocol.events import Action, ComputeContribution, SendAck, SendContribution
from gradchain.protocol.messages import Ack, Contribution, Liveness, RoundStart, Status
from gradchain.protocol.node import NodeConfig, NodeProtocol, NodeState
from tests.protocol.conftest import KEY_BITS
from tests.protocol.test_node import (
    CIPHERTEXT_COUNT,
    JOB,
    PARAMETERS,
    RUN,
    THETA,
    VECTOR_P1,
    VECTOR_P2,
    VECTOR_P3,
    VECTOR_P4,
    contribution,
    decrypted,
    plaintext_sum,
)

if TYPE_CHECKING:
    from tests.protocol.conftest import Paillier

TIMEOUT = 60.0


def p4_config(**changes: Any) -> NodeConfig:
    """Return the config of provider p4 in the chain p1 -> p2 -> p3 -> p4 -> p5 -> learner."""
    config = NodeConfig(
        job=JOB,
        node_id="p4",
        successor="p5",
        inputs={"p3": frozenset({"p1", "p2", "p3"})},
        is_provider=True,
        parameters=PARAMETERS,
        ciphertext_count=CIPHERTEXT_COUNT,
        key_bits=KEY_BITS,
        fallbacks=("learner",),
        rerouted_inputs={"p2": frozenset({"p1", "p2"}), "p1": frozenset({"p1"})},
        feeders={"p3": frozenset({"p2"}), "p2": frozenset({"p1"}), "p1": frozenset()},
        deadline_share=0.4,
    )
    return replace(config, **changes)


def start(
    paillier: Paillier, *, round: int = 1, participants: tuple[str, ...] | None = None
) -> RoundStart:
    return RoundStart(
        job=JOB,
        run=RUN,
        round=round,
        theta=THETA,
        public_key=paillier.public_key.n,
        timeout=TIMEOUT,
        participants=participants,
    )


def status(node: str, state: Liveness) -> Status:
    return Status(job=JOB, node=node, state=state, instance="0123abcd")


def ack(*, sender: str = "p5", of: str = "p4", round: int = 1, run: str = RUN) -> Ack:
    return Ack(job=JOB, run=run, round=round, sender=sender, of=of)


def started_p4(paillier: Paillier, **changes: Any) -> NodeProtocol:
    node = NodeProtocol(p4_config(**changes))
    node.receive(start(paillier))
    return node


def upstream_sum(paillier: Paillier, round: int = 1) -> Contribution:
    """Return p3's sum of p1, p2 and p3."""
    return contribution(
        "p3",
        ["p1", "p2", "p3"],
        paillier.encrypt(plaintext_sum(VECTOR_P1, VECTOR_P2, VECTOR_P3)),
        round=round,
    )


def only_send(actions: list[Action]) -> SendContribution:
    assert len(actions) == 1, actions
    action = actions[0]
    assert isinstance(action, SendContribution), action
    return action


def forwarded_p4(paillier: Paillier) -> tuple[NodeProtocol, SendContribution]:
    """Return p4 after it forwarded a complete sum in round 1, and that send."""
    node = started_p4(paillier)
    node.receive(upstream_sum(paillier))
    node.acks_to_send()
    return node, only_send(node.own_contribution_ready(1, paillier.encrypt(VECTOR_P4)))


def expected_ack(of: str, round: int = 1) -> list[SendAck]:
    return [SendAck(to=of, message=Ack(job=JOB, run=RUN, round=round, sender="p4", of=of))]


# Acks for received contributions


def test_counted_contribution_acked(paillier: Paillier) -> None:
    node = started_p4(paillier)

    node.receive(upstream_sum(paillier))

    assert node.acks_to_send() == expected_ack("p3")
    assert node.acks_to_send() == []


def test_duplicate_contribution_acked_again(paillier: Paillier) -> None:
    node = started_p4(paillier)
    node.receive(upstream_sum(paillier))
    node.acks_to_send()

    with pytest.raises(DuplicateMessageError):
        node.receive(upstream_sum(paillier))

    assert node.acks_to_send() == expected_ack("p3")


def test_contribution_of_closed_round_acked(paillier: Paillier) -> None:
    node = started_p4(paillier)
    node.receive(start(paillier, round=2))

    with pytest.raises(StaleMessageError, match="round already closed"):
        node.receive(upstream_sum(paillier, round=1))

    assert node.acks_to_send() == expected_ack("p3", round=1)


def test_contribution_after_forwarding_acked(paillier: Paillier) -> None:
    node = started_p4(paillier)
    node.own_contribution_ready(1, paillier.encrypt(VECTOR_P4))
    node.deadline_reached(1)

    with pytest.raises(StaleMessageError, match="already forwarded"):
        node.receive(upstream_sum(paillier))

    assert node.acks_to_send() == expected_ack("p3")


def test_early_contribution_acked(paillier: Paillier) -> None:
    node = NodeProtocol(p4_config())

    node.receive(upstream_sum(paillier))

    assert node.acks_to_send() == expected_ack("p3")


def test_overlapping_contribution_acked(paillier: Paillier) -> None:
    node = started_p4(paillier)
    node.receive(status("p3", Liveness.OFFLINE))
    node.receive(
        contribution("p2", ["p1", "p2"], paillier.encrypt(plaintext_sum(VECTOR_P1, VECTOR_P2)))
    )
    node.acks_to_send()

    with pytest.raises(
        DuplicateMessageError, match=r"\['p1', 'p2'\] are already in this round's sum"
    ):
        node.receive(upstream_sum(paillier))

    assert node.acks_to_send() == expected_ack("p3")


def test_invalid_contribution_not_acked(paillier: Paillier) -> None:
    node = started_p4(paillier)
    bad = replace(
        upstream_sum(paillier), ciphertexts=(paillier.public_key.nsquare,) * CIPHERTEXT_COUNT
    )

    with pytest.raises(ProtocolError, match="is not in Z"):
        node.receive(bad)

    assert node.acks_to_send() == []


@pytest.mark.parametrize("sender", ["p5", "p9", "learner"])
def test_contribution_from_outside_upstream_not_acked(paillier: Paillier, sender: str) -> None:
    node = started_p4(paillier)

    with pytest.raises(ProtocolError, match="does not pass through this node"):
        node.receive(contribution(sender, ["p1"], paillier.encrypt(VECTOR_P1)))

    assert node.acks_to_send() == []


# Resending until acknowledged


def test_retry_resends_identical_message(paillier: Paillier) -> None:
    node, sent = forwarded_p4(paillier)

    resend = only_send(node.retry_due(1))

    assert resend.message == sent.message
    assert resend.to == "p5"
    assert resend.reason == "retry"
    assert sent.reason == "complete"


def test_ack_ends_resends(paillier: Paillier) -> None:
    node, _ = forwarded_p4(paillier)

    assert node.receive(ack()) == []

    assert node.acknowledged
    assert node.retry_due(1) == []


def test_new_round_ends_resends(paillier: Paillier) -> None:
    node, _ = forwarded_p4(paillier)

    node.receive(start(paillier, round=2))

    assert node.retry_due(1) == []
    assert node.retry_due(2) == []


def test_nothing_to_resend_before_forwarding(paillier: Paillier) -> None:
    node = started_p4(paillier)

    assert node.retry_due(1) == []


def test_ack_from_fallback_node_accepted(paillier: Paillier) -> None:
    node, _ = forwarded_p4(paillier)

    node.receive(ack(sender="learner"))

    assert node.acknowledged


def test_second_ack_is_duplicate(paillier: Paillier) -> None:
    node, _ = forwarded_p4(paillier)
    node.receive(ack())

    with pytest.raises(DuplicateMessageError, match="Ack already received"):
        node.receive(ack())


@pytest.mark.parametrize(
    ("message", "error", "text"),
    [
        pytest.param(
            ack(of="p3"), ProtocolError, "Ack for 'p3' reached node p4", id="for-another-node"
        ),
        pytest.param(
            ack(sender="p3"), ProtocolError, "not on this node's path", id="from-upstream"
        ),
        pytest.param(ack(round=2), StaleMessageError, "another round", id="future-round"),
        pytest.param(
            ack(run="fedcba9876543210"), StaleMessageError, "another round", id="another-run"
        ),
    ],
)
def test_ack_that_does_not_fit_rejected(
    paillier: Paillier, message: Ack, error: type[ProtocolError], text: str
) -> None:
    node, _ = forwarded_p4(paillier)

    with pytest.raises(error, match=text):
        node.receive(message)

    assert not node.acknowledged


def test_ack_before_forwarding_is_stale(paillier: Paillier) -> None:
    node = started_p4(paillier)

    with pytest.raises(StaleMessageError, match="nothing outstanding"):
        node.receive(ack())


# Deadlines


def test_deadline_delay_is_share_of_timeout(paillier: Paillier) -> None:
    node = NodeProtocol(p4_config())
    assert node.deadline_delay is None

    node.receive(start(paillier))

    assert node.deadline_delay == pytest.approx(0.4 * TIMEOUT)


def test_deadline_forwards_partial_sum(paillier: Paillier) -> None:
    node = started_p4(paillier)
    assert node.own_contribution_ready(1, paillier.encrypt(VECTOR_P4)) == []

    sent = only_send(node.deadline_reached(1))

    assert sent.reason == "deadline"
    assert sent.to == "p5"
    assert sent.message.contributors == ("p4",)
    assert decrypted(paillier, sent.message) == list(VECTOR_P4)
    assert node.state is NodeState.FORWARDED


def test_deadline_forwards_inputs_without_own_share(paillier: Paillier) -> None:
    node = started_p4(paillier)
    node.receive(upstream_sum(paillier))

    sent = only_send(node.deadline_reached(1))

    assert sent.message.contributors == ("p1", "p2", "p3")
    assert decrypted(paillier, sent.message) == plaintext_sum(VECTOR_P1, VECTOR_P2, VECTOR_P3)
    with pytest.raises(StaleMessageError, match="after the node forwarded its sum"):
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P4))


def test_deadline_with_nothing_forwards_first_arrival(paillier: Paillier) -> None:
    node = started_p4(paillier)

    assert node.deadline_reached(1) == []
    assert node.state is NodeState.COLLECTING
    sent = only_send(node.own_contribution_ready(1, paillier.encrypt(VECTOR_P4)))

    assert sent.reason == "deadline"
    assert sent.message.contributors == ("p4",)
    with pytest.raises(StaleMessageError):
        node.receive(upstream_sum(paillier))


def test_deadline_of_closed_round_ignored(paillier: Paillier) -> None:
    node = started_p4(paillier)
    node.receive(start(paillier, round=2))
    node.own_contribution_ready(2, paillier.encrypt(VECTOR_P4))

    assert node.deadline_reached(1) == []
    assert node.state is NodeState.COLLECTING


def test_deadline_after_forwarding_ignored(paillier: Paillier) -> None:
    node, _ = forwarded_p4(paillier)

    assert node.deadline_reached(1) == []


# Routing around offline nodes


def test_offline_successor_skipped(paillier: Paillier) -> None:
    node = started_p4(paillier)
    node.receive(status("p5", Liveness.OFFLINE))
    node.receive(upstream_sum(paillier))

    sent = only_send(node.own_contribution_ready(1, paillier.encrypt(VECTOR_P4)))

    assert sent.to == "learner"
    assert sent.skipped == ("p5",)


def test_successor_back_online_used_again(paillier: Paillier) -> None:
    node = started_p4(paillier)
    node.receive(status("p5", Liveness.OFFLINE))
    node.receive(status("p5", Liveness.ONLINE))
    node.receive(upstream_sum(paillier))

    sent = only_send(node.own_contribution_ready(1, paillier.encrypt(VECTOR_P4)))

    assert sent.to == "p5"
    assert sent.skipped == ()


def test_unacked_sum_rerouted_on_offline_target(paillier: Paillier) -> None:
    node, sent = forwarded_p4(paillier)

    rerouted = only_send(node.receive(status("p5", Liveness.OFFLINE)))

    assert rerouted.to == "learner"
    assert rerouted.reason == "reroute"
    assert rerouted.message == sent.message
    assert only_send(node.retry_due(1)).to == "learner"


def test_acknowledged_sum_not_rerouted(paillier: Paillier) -> None:
    node, _ = forwarded_p4(paillier)
    node.receive(ack())

    assert node.receive(status("p5", Liveness.OFFLINE)) == []


def test_rerouted_sender_accepted(paillier: Paillier) -> None:
    node = started_p4(paillier)
    node.receive(status("p3", Liveness.OFFLINE))
    around = contribution("p2", ["p1", "p2"], paillier.encrypt(plaintext_sum(VECTOR_P1, VECTOR_P2)))

    assert node.receive(around) == []
    assert node.acks_to_send() == expected_ack("p2")
    sent = only_send(node.own_contribution_ready(1, paillier.encrypt(VECTOR_P4)))

    assert sent.reason == "complete"
    assert sent.message.contributors == ("p1", "p2", "p4")
    assert decrypted(paillier, sent.message) == plaintext_sum(VECTOR_P1, VECTOR_P2, VECTOR_P4)


def test_rerouted_sender_contributors_checked(paillier: Paillier) -> None:
    node = started_p4(paillier)
    claims_p3 = contribution(
        "p2", ["p2", "p3"], paillier.encrypt(plaintext_sum(VECTOR_P2, VECTOR_P3))
    )

    with pytest.raises(
        ProtocolError, match=r"contributors \['p3'\] cannot reach this node through 'p2'"
    ):
        node.receive(claims_p3)

    assert node.acks_to_send() == []


def test_offline_input_waits_for_its_inputs(paillier: Paillier) -> None:
    node = started_p4(paillier)

    node.receive(status("p3", Liveness.OFFLINE))

    assert node.awaited == {"p2"}


def test_upstream_offline_forwards_own_share(paillier: Paillier) -> None:
    node = started_p4(paillier)
    for upstream in ("p1", "p2", "p3"):
        node.receive(status(upstream, Liveness.OFFLINE))

    sent = only_send(node.own_contribution_ready(1, paillier.encrypt(VECTOR_P4)))

    assert sent.reason == "complete"
    assert sent.message.contributors == ("p4",)


def test_input_going_offline_completes_round(paillier: Paillier) -> None:
    node = started_p4(paillier)
    node.receive(status("p1", Liveness.OFFLINE))
    node.receive(status("p2", Liveness.OFFLINE))
    assert node.own_contribution_ready(1, paillier.encrypt(VECTOR_P4)) == []

    sent = only_send(node.receive(status("p3", Liveness.OFFLINE)))

    assert sent.message.contributors == ("p4",)


def test_own_status_ignored(paillier: Paillier) -> None:
    node = started_p4(paillier)

    assert node.receive(status("p4", Liveness.OFFLINE)) == []
    assert "p4" not in node.offline


# Participants sampled by the learner


def test_non_participant_computes_nothing(paillier: Paillier) -> None:
    node = NodeProtocol(p4_config())

    actions = node.receive(start(paillier, participants=("p1", "p2", "p5")))

    assert not any(isinstance(action, ComputeContribution) for action in actions)
    with pytest.raises(ProtocolError, match="not a participant of round 1"):
        node.own_contribution_ready(1, paillier.encrypt(VECTOR_P4))


def test_participant_computes_own_share(paillier: Paillier) -> None:
    node = NodeProtocol(p4_config())

    actions = node.receive(start(paillier, participants=("p1", "p4", "p5")))

    assert actions == [ComputeContribution(round=1, theta=THETA, public_key=paillier.public_key.n)]


def test_non_participant_relays_upstream_sum_at_once(paillier: Paillier) -> None:
    node = NodeProtocol(p4_config())
    node.receive(start(paillier, participants=("p1", "p2", "p5")))

    sent = only_send(
        node.receive(
            contribution("p3", ["p1", "p2"], paillier.encrypt(plaintext_sum(VECTOR_P1, VECTOR_P2)))
        )
    )

    assert sent.message.contributors == ("p1", "p2")
    assert decrypted(paillier, sent.message) == plaintext_sum(VECTOR_P1, VECTOR_P2)


def test_contributor_outside_participants_rejected(paillier: Paillier) -> None:
    node = NodeProtocol(p4_config())
    node.receive(start(paillier, participants=("p1", "p2", "p4")))

    with pytest.raises(ProtocolError, match=r"contributors \['p3'\] are not participants"):
        node.receive(upstream_sum(paillier))

    assert node.acks_to_send() == []


def test_input_without_participants_not_awaited(paillier: Paillier) -> None:
    node = NodeProtocol(p4_config())
    node.receive(start(paillier, participants=("p4", "p5", "p6")))

    assert node.awaited == frozenset()
    sent = only_send(node.own_contribution_ready(1, paillier.encrypt(VECTOR_P4)))
    assert sent.message.contributors == ("p4",)


def test_node_without_participants_forwards_nothing(paillier: Paillier) -> None:
    node = NodeProtocol(p4_config())

    actions = node.receive(start(paillier, participants=("p5", "p6", "p7")))

    assert actions == []
    assert node.deadline_reached(1) == []
    assert node.retry_due(1) == []
