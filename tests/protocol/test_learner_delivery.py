"""Tests for the fault handling of gradchain.protocol.learner: Acks, rerouted inputs, participants, resuming."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from gradchain.errors import DuplicateMessageError, ProtocolError, StaleMessageError
from gradchain.protocol.events import DecryptTotal, PublishRound, RoundCompleted, SendAck
from gradchain.protocol.learner import LearnerProtocol
from gradchain.protocol.messages import Ack, Liveness, Status
from tests.protocol.test_learner import (
    JOB,
    RUN,
    SCALES,
    THETA0,
    UNIT_SCALES,
    contribution,
    decrypt_total,
    deliver_round,
    expected_theta,
    learner_config,
    provider_vector,
    published_round_start,
    started_learner,
)

if TYPE_CHECKING:
    from tests.protocol.conftest import Paillier

# Chain p1 -> p2 -> p3 -> learner.
CHAIN = {
    "inputs": {"p3": frozenset({"p1", "p2", "p3"})},
    "rerouted_inputs": {"p2": frozenset({"p1", "p2"}), "p1": frozenset({"p1"})},
    "feeders": {"p3": frozenset({"p2"}), "p2": frozenset({"p1"}), "p1": frozenset()},
    "min_contributors": 2,
}

SIX_PROVIDERS = tuple(f"p{index}" for index in range(1, 7))


def chain_learner(paillier: Paillier, **changes: Any) -> LearnerProtocol:
    return started_learner(paillier, **(CHAIN | changes))


def status(node: str, state: Liveness) -> Status:
    return Status(job=JOB, node=node, state=state, instance="0123abcd")


def expected_ack(of: str, round: int = 1) -> list[SendAck]:
    return [SendAck(to=of, message=Ack(job=JOB, run=RUN, round=round, sender="learner", of=of))]


def only_decrypt(actions: list[Any]) -> DecryptTotal:
    assert len(actions) == 1, actions
    action = actions[0]
    assert isinstance(action, DecryptTotal), action
    return action


# Acks


def test_counted_contribution_acked(paillier: Paillier) -> None:
    learner = started_learner(paillier)

    learner.receive(contribution(paillier, "a", ["p1", "p2"]))

    assert learner.acks_to_send() == expected_ack("a")
    assert learner.acks_to_send() == []


def test_duplicate_contribution_acked_again(paillier: Paillier) -> None:
    learner = started_learner(paillier)
    learner.receive(contribution(paillier, "a", ["p1", "p2"]))
    learner.acks_to_send()

    with pytest.raises(DuplicateMessageError):
        learner.receive(contribution(paillier, "a", ["p1", "p2"]))

    assert learner.acks_to_send() == expected_ack("a")


def test_contribution_of_failed_round_acked(paillier: Paillier) -> None:
    learner = started_learner(paillier)
    learner.round_timed_out(1)

    with pytest.raises(StaleMessageError, match="round is not open"):
        learner.receive(contribution(paillier, "a", ["p1", "p2"], round=1))

    assert learner.acks_to_send() == expected_ack("a", round=1)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(lambda paillier: {"sender": "p9"}, id="unknown-sender"),
        pytest.param(lambda paillier: {"contributors": ("p1", "p3")}, id="unreachable-contributor"),
        pytest.param(
            lambda paillier: {"ciphertexts": (paillier.public_key.n,) * 3}, id="invalid-ciphertexts"
        ),
    ],
)
def test_invalid_contribution_not_acked(paillier: Paillier, changes: Any) -> None:
    learner = started_learner(paillier)
    message = replace(contribution(paillier, "a", ["p1", "p2"]), **changes(paillier))

    with pytest.raises(ProtocolError):
        learner.receive(message)

    assert learner.acks_to_send() == []


def test_learner_rejects_ack(paillier: Paillier) -> None:
    learner = started_learner(paillier)

    with pytest.raises(ProtocolError, match="does not accept Ack"):
        learner.receive(Ack(job=JOB, run=RUN, round=1, sender="p1", of="learner"))


# Senders that route around offline nodes


def test_rerouted_sender_accepted_when_offline(paillier: Paillier) -> None:
    learner = chain_learner(paillier)
    assert learner.receive(status("p3", Liveness.OFFLINE)) == []

    action = only_decrypt(learner.receive(contribution(paillier, "p2", ["p1", "p2"])))

    assert action.contributors == ("p1", "p2")
    assert learner.acks_to_send() == expected_ack("p2")
    expected = [
        a + b
        for a, b in zip(provider_vector("p1", SCALES), provider_vector("p2", SCALES), strict=True)
    ]
    assert decrypt_total(paillier, action).tolist() == expected


def test_rerouted_sender_waits_while_input_online(paillier: Paillier) -> None:
    learner = chain_learner(paillier)

    assert learner.receive(contribution(paillier, "p2", ["p1", "p2"])) == []

    assert learner.awaited == {"p3"}


def test_input_going_offline_triggers_decryption(paillier: Paillier) -> None:
    learner = chain_learner(paillier)
    learner.receive(contribution(paillier, "p2", ["p1", "p2"]))

    action = only_decrypt(learner.receive(status("p3", Liveness.OFFLINE)))

    assert action.contributors == ("p1", "p2")


def test_all_offline_waits_for_timeout(paillier: Paillier) -> None:
    learner = chain_learner(paillier)

    for node in ("p1", "p2", "p3"):
        assert learner.receive(status(node, Liveness.OFFLINE)) == []


def test_rerouted_sender_contributors_checked(paillier: Paillier) -> None:
    learner = chain_learner(paillier)

    with pytest.raises(
        ProtocolError, match=r"contributors \['p3'\] cannot reach the learner through 'p2'"
    ):
        learner.receive(contribution(paillier, "p2", ["p2", "p3"]))


def test_rerouted_overlap_rejected(paillier: Paillier) -> None:
    learner = chain_learner(paillier, min_contributors=3)
    learner.receive(contribution(paillier, "p2", ["p1", "p2"]))
    learner.acks_to_send()

    with pytest.raises(
        DuplicateMessageError, match=r"\['p1', 'p2'\] are already in this round's total"
    ):
        learner.receive(contribution(paillier, "p3", ["p1", "p2", "p3"]))

    assert learner.acks_to_send() == expected_ack("p3")
    assert learner.awaited == {"p3"}


# Participants


def test_full_sample_publishes_no_participant_list(paillier: Paillier) -> None:
    learner = LearnerProtocol(
        learner_config(), run=RUN, public_key=paillier.public_key, theta=np.array(THETA0)
    )

    start = published_round_start(learner.start()[0])

    assert start.participants is None
    assert learner.participants is None


def sampling_learner(paillier: Paillier, **changes: Any) -> LearnerProtocol:
    inputs = {provider: frozenset({provider}) for provider in SIX_PROVIDERS}
    settings: dict[str, Any] = {
        "inputs": inputs,
        "providers": SIX_PROVIDERS,
        "sample_fraction": 0.5,
        "seed": 4,
        "min_contributors": 2,
    }
    return LearnerProtocol(
        learner_config(**(settings | changes)),
        run=RUN,
        public_key=paillier.public_key,
        theta=np.array(THETA0),
    )


def test_round_start_carries_sample(paillier: Paillier) -> None:
    learner = sampling_learner(paillier)

    start = published_round_start(learner.start()[0])

    assert start.participants is not None
    assert len(start.participants) == 3
    assert set(start.participants) <= set(SIX_PROVIDERS)
    assert learner.participants == frozenset(start.participants)


def test_same_seed_samples_alike(paillier: Paillier) -> None:
    first = published_round_start(sampling_learner(paillier).start()[0])
    again = published_round_start(sampling_learner(paillier).start()[0])

    assert first.participants == again.participants


def test_sample_respects_min_contributors(paillier: Paillier) -> None:
    learner = sampling_learner(paillier, sample_fraction=0.1, min_contributors=4)

    start = published_round_start(learner.start()[0])

    assert start.participants is not None
    assert len(start.participants) == 4


def test_learner_waits_only_for_participants(paillier: Paillier) -> None:
    learner = sampling_learner(paillier)
    start = published_round_start(learner.start()[0])
    assert start.participants is not None
    first, *others = start.participants
    learner.receive(single(paillier, first))

    assert learner.awaited == frozenset(others)
    for provider in others[:-1]:
        assert learner.receive(single(paillier, provider)) == []
    action = only_decrypt(learner.receive(single(paillier, others[-1])))

    assert action.contributors == start.participants


def test_non_participant_contribution_rejected(paillier: Paillier) -> None:
    learner = sampling_learner(paillier)
    start = published_round_start(learner.start()[0])
    assert start.participants is not None
    outsider = sorted(set(SIX_PROVIDERS) - set(start.participants))[0]

    with pytest.raises(ProtocolError, match=rf"contributors \['{outsider}'\] are not participants"):
        learner.receive(single(paillier, outsider))

    assert learner.acks_to_send() == []


def single(paillier: Paillier, provider: str) -> Any:
    """Return the contribution of one provider that sends straight to the learner."""
    return replace(
        contribution(paillier, "p1", ["p1"], scales=UNIT_SCALES),
        sender=provider,
        contributors=(provider,),
    )


# Scale totals and resuming


def test_round_completed_reports_scale_total(paillier: Paillier) -> None:
    learner = started_learner(paillier)
    action = deliver_round(learner, paillier)
    totals = decrypt_total(paillier, action)

    completed = learner.total_decrypted(1, totals)[0]

    assert isinstance(completed, RoundCompleted)
    assert completed.scale_total == pytest.approx(sum(SCALES.values()))
    assert completed.scale_total == totals[-1]
    assert completed.participants is None


def test_resume_opens_next_round(paillier: Paillier) -> None:
    theta = np.array([0.125, -0.75])
    learner = LearnerProtocol(
        learner_config(), run=RUN, public_key=paillier.public_key, theta=theta
    )

    actions = learner.resume(last_round=7, iteration=5, failed_in_a_row=2)

    assert len(actions) == 1
    assert isinstance(actions[0], PublishRound)
    start = published_round_start(actions[0])
    assert start.round == 8
    assert start.run == RUN
    assert start.theta == (0.125, -0.75)
    assert learner.iteration == 5
    assert learner.failed_in_a_row == 2


def test_resumed_learner_continues_iterations(paillier: Paillier) -> None:
    theta = np.array(THETA0)
    learner = LearnerProtocol(
        learner_config(), run=RUN, public_key=paillier.public_key, theta=theta
    )
    learner.resume(last_round=3, iteration=2)
    action = deliver_round(learner, paillier)

    completed = learner.total_decrypted(4, decrypt_total(paillier, action))[0]

    assert isinstance(completed, RoundCompleted)
    assert completed.round == 4
    assert completed.iteration == 3
    np.testing.assert_allclose(
        completed.theta,
        expected_theta(THETA0, ["p1", "p2", "p3"], SCALES, 0.5, 0.01),
        rtol=1e-12,
        atol=0,
    )


def test_resume_rejects_negative_checkpoint_values(paillier: Paillier) -> None:
    learner = LearnerProtocol(
        learner_config(), run=RUN, public_key=paillier.public_key, theta=np.array(THETA0)
    )

    with pytest.raises(ValueError, match=">= 0"):
        learner.resume(last_round=-1, iteration=0)
