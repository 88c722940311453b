"""Tests for gradchain.protocol.learner."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pytest

from gradchain.crypto import add_vectors
from gradchain.errors import DuplicateMessageError, ProtocolError, StaleMessageError
from gradchain.models.training import StepSchedule
from gradchain.protocol.events import (
    Action,
    DecryptTotal,
    Finished,
    PublishRound,
    RoundCompleted,
    RoundFailed,
)
from gradchain.protocol.learner import LearnerConfig, LearnerProtocol, LearnerState
from gradchain.protocol.messages import Contribution, JobDone, Liveness, RoundStart, Status
from gradchain.protocol.node import InvalidTransitionError
from gradchain.randomisers import (
    AdditiveRandomiser,
    Randomiser,
    ScalarRandomiser,
    UniformRandomiser,
    VectorRandomiser,
)

if TYPE_CHECKING:
    from tests.protocol.conftest import Paillier

JOB = "job-1"
RUN = "0123456789abcdef"
OTHER_RUN = "fedcba9876543210"
THETA0 = (0.5, -0.25)
PROVIDERS = ("p1", "p2", "p3")

# Gradients g_i and random scales a_i of the three providers. Every product
# a_i * g_i is a multiple of 2**-32, so the encoding represents it exactly.
GRADIENTS = {"p1": (1.5, -2.0), "p2": (0.25, 4.0), "p3": (-3.0, 0.5)}
SCALES = {"p1": 0.5, "p2": 0.25, "p3": 0.75}
UNIT_SCALES = {"p1": 1.0, "p2": 1.0, "p3": 1.0}


def learner_config(**changes: Any) -> LearnerConfig:
    """Return a config where input a carries p1 and p2, and input b carries p3."""
    config = LearnerConfig(
        job=JOB,
        learner_id="learner",
        inputs={"a": frozenset({"p1", "p2"}), "b": frozenset({"p3"})},
        min_contributors=3,
        parameters=2,
        ciphertext_count=3,
        randomise=True,
        schedule=StepSchedule(kind="constant", learning_rate=0.5),
        l2=0.01,
        max_rounds=10,
        tolerance=1e-9,
        round_timeout=30.0,
        max_failed_rounds=3,
    )
    return replace(config, **changes)


def started_learner(paillier: Paillier, **changes: Any) -> LearnerProtocol:
    learner = LearnerProtocol(
        learner_config(**changes), run=RUN, public_key=paillier.public_key, theta=np.array(THETA0)
    )
    learner.start()
    return learner


def provider_vector(provider: str, scales: Mapping[str, float]) -> list[float]:
    """Return the plaintext [a_i*g_i..., a_i] that provider encrypts."""
    scale = scales[provider]
    return [scale * value for value in GRADIENTS[provider]] + [scale]


def encrypted_sum(
    paillier: Paillier, providers: Sequence[str], scales: Mapping[str, float]
) -> tuple[int, ...]:
    """Encrypt each provider's vector and add the ciphertexts, as the nodes on a path do."""
    total = list(paillier.encrypt(provider_vector(providers[0], scales)))
    for provider in providers[1:]:
        total = add_vectors(
            paillier.public_key, total, paillier.encrypt(provider_vector(provider, scales))
        )
    return tuple(total)


def contribution(
    paillier: Paillier,
    sender: str,
    providers: Sequence[str],
    *,
    round: int = 1,
    run: str = RUN,
    job: str = JOB,
    scales: Mapping[str, float] = SCALES,
) -> Contribution:
    return Contribution(
        job=job,
        run=run,
        round=round,
        sender=sender,
        contributors=tuple(providers),
        ciphertexts=encrypted_sum(paillier, providers, scales),
    )


def deliver_round(
    learner: LearnerProtocol, paillier: Paillier, *, scales: Mapping[str, float] = SCALES
) -> DecryptTotal:
    """Deliver the contributions of inputs a and b and return the DecryptTotal they trigger."""
    round_number = learner.round
    assert (
        learner.receive(
            contribution(paillier, "a", ["p1", "p2"], round=round_number, scales=scales)
        )
        == []
    )
    actions = learner.receive(
        contribution(paillier, "b", ["p3"], round=round_number, scales=scales)
    )
    assert len(actions) == 1, actions
    decrypt = actions[0]
    assert isinstance(decrypt, DecryptTotal), decrypt
    return decrypt


def decrypt_total(paillier: Paillier, action: DecryptTotal) -> npt.NDArray[np.float64]:
    return paillier.decrypt(action.ciphertexts, contributors=len(action.contributors))


def complete_round(
    learner: LearnerProtocol, paillier: Paillier, *, scales: Mapping[str, float] = SCALES
) -> list[Action]:
    action = deliver_round(learner, paillier, scales=scales)
    return learner.total_decrypted(action.round, decrypt_total(paillier, action))


def expected_theta(
    theta: npt.ArrayLike,
    providers: Sequence[str],
    scales: Mapping[str, float],
    learning_rate: float,
    l2: float,
) -> npt.NDArray[np.float64]:
    """Compute theta - eta * (sum(a g) / sum(a) + 2 * l2 * theta) from the plaintext gradients."""
    theta_array = np.array(theta)
    weighted = np.sum([scales[p] * np.array(GRADIENTS[p]) for p in providers], axis=0)
    direction = weighted / sum(scales[p] for p in providers)
    result: npt.NDArray[np.float64] = theta_array - learning_rate * (
        direction + 2 * l2 * theta_array
    )
    return result


def published_round_start(action: Action) -> RoundStart:
    assert isinstance(action, PublishRound), action
    assert isinstance(action.message, RoundStart), action.message
    return action.message


def published_job_done(action: Action) -> JobDone:
    assert isinstance(action, PublishRound), action
    assert isinstance(action.message, JobDone), action.message
    return action.message


# Start and the first round


def test_start_publishes_first_round(paillier: Paillier) -> None:
    learner = LearnerProtocol(
        learner_config(), run=RUN, public_key=paillier.public_key, theta=np.array(THETA0)
    )

    actions = learner.start()

    assert actions == [
        PublishRound(
            message=RoundStart(
                job=JOB,
                run=RUN,
                round=1,
                theta=THETA0,
                public_key=paillier.public_key.n,
                public_key_hs=paillier.public_key.hs,
                timeout=30.0,
            )
        )
    ]
    assert learner.state is LearnerState.COLLECTING
    assert learner.round == 1


def test_learner_rejects_theta_of_wrong_shape(paillier: Paillier) -> None:
    with pytest.raises(ValueError, match=r"theta has shape \(3,\), expected \(2,\)"):
        LearnerProtocol(
            learner_config(), run=RUN, public_key=paillier.public_key, theta=np.zeros(3)
        )


def test_all_inputs_in_requests_decryption(paillier: Paillier) -> None:
    learner = started_learner(paillier)

    action = deliver_round(learner, paillier)

    assert action.round == 1
    assert action.contributors == PROVIDERS
    assert learner.state is LearnerState.DECRYPTING
    expected = [sum(provider_vector(p, SCALES)[slot] for p in PROVIDERS) for slot in range(3)]
    assert decrypt_total(paillier, action).tolist() == expected


def test_first_input_alone_requests_nothing(paillier: Paillier) -> None:
    learner = started_learner(paillier)

    actions = learner.receive(contribution(paillier, "a", ["p1", "p2"]))

    assert actions == []
    assert learner.state is LearnerState.COLLECTING


def test_status_message_changes_nothing(paillier: Paillier) -> None:
    learner = started_learner(paillier)

    assert learner.receive(Status(job=JOB, node="p1", state=Liveness.ONLINE, instance=RUN)) == []
    assert learner.state is LearnerState.COLLECTING


# Minimum number of contributors


def test_too_few_contributors_never_decrypted(paillier: Paillier) -> None:
    learner = started_learner(paillier)
    learner.receive(contribution(paillier, "a", ["p1"]))

    actions = learner.receive(contribution(paillier, "b", ["p3"]))

    assert not any(isinstance(action, DecryptTotal) for action in actions)
    assert len(actions) == 2
    assert actions[0] == RoundFailed(round=1, reason="only 2 contributors, at least 3 are required")
    next_round = published_round_start(actions[1])
    assert next_round.round == 2
    assert next_round.theta == THETA0
    assert learner.round == 2
    assert learner.state is LearnerState.COLLECTING
    assert learner.iteration == 0


# The update of theta


@pytest.mark.parametrize(
    ("kind", "step_sizes"),
    [
        pytest.param("constant", [0.5, 0.5], id="constant"),
        pytest.param("inverse_sqrt", [0.5, 0.5 / math.sqrt(2)], id="inverse-sqrt"),
        pytest.param("inverse_square", [0.5, 0.5 / 4], id="inverse-square"),
    ],
)
def test_decrypted_total_updates_theta(
    paillier: Paillier, kind: str, step_sizes: list[float]
) -> None:
    learner = started_learner(paillier, schedule=StepSchedule(kind=kind, learning_rate=0.5))  # type: ignore[arg-type]
    theta = np.array(THETA0)

    for iteration, step_size in enumerate(step_sizes, start=1):
        actions = complete_round(learner, paillier)
        expected = expected_theta(theta, PROVIDERS, SCALES, step_size, l2=0.01)

        assert len(actions) == 2, actions
        completed = actions[0]
        assert isinstance(completed, RoundCompleted), completed
        assert completed.round == iteration
        assert completed.iteration == iteration
        assert completed.contributors == PROVIDERS
        assert completed.learning_rate == pytest.approx(step_size, rel=1e-15)
        np.testing.assert_allclose(completed.theta, expected, rtol=1e-12, atol=0)
        np.testing.assert_allclose(learner.theta, expected, rtol=1e-12, atol=0)
        assert completed.step == pytest.approx(np.max(np.abs(expected - theta)), rel=1e-12)
        next_round = published_round_start(actions[1])
        assert next_round.round == iteration + 1
        np.testing.assert_allclose(next_round.theta, expected, rtol=1e-12, atol=0)
        theta = expected


def test_update_without_randomisation_uses_mean_gradient(paillier: Paillier) -> None:
    learner = started_learner(paillier, randomise=False)

    actions = complete_round(learner, paillier, scales=UNIT_SCALES)

    mean_gradient = np.mean([GRADIENTS[p] for p in PROVIDERS], axis=0)
    expected = np.array(THETA0) - 0.5 * (mean_gradient + 2 * 0.01 * np.array(THETA0))
    completed = actions[0]
    assert isinstance(completed, RoundCompleted), completed
    np.testing.assert_allclose(completed.theta, expected, rtol=1e-12, atol=0)


def test_update_uses_random_scales_not_mean(paillier: Paillier) -> None:
    learner = started_learner(paillier)

    complete_round(learner, paillier)

    mean_gradient = np.mean([GRADIENTS[p] for p in PROVIDERS], axis=0)
    unweighted = np.array(THETA0) - 0.5 * (mean_gradient + 2 * 0.01 * np.array(THETA0))
    assert not np.allclose(learner.theta, unweighted)


# Scale totals that show a provider counted twice


@pytest.mark.parametrize(
    ("randomise", "b_scale", "scale_total"),
    [
        # Input b adds p3's vector with the given scale, so the total is 1 + 1 + b_scale.
        pytest.param(False, 2.0, 4.0, id="fixed-counted-twice"),
        pytest.param(False, 0.5, 2.5, id="fixed-below-count"),
        pytest.param(False, 0.0, 2.0, id="fixed-one-missing"),
        pytest.param(True, 1.5, 3.5, id="random-above-count"),
    ],
)
def test_scale_total_that_does_not_fit_rejected(
    paillier: Paillier, randomise: bool, b_scale: float, scale_total: float
) -> None:
    learner = started_learner(paillier, randomise=randomise)
    scales = {"p1": 1.0, "p2": 1.0, "p3": b_scale}

    actions = complete_round(learner, paillier, scales=scales)

    assert len(actions) == 2, actions
    failed = actions[0]
    assert isinstance(failed, RoundFailed), failed
    assert failed.round == 1
    assert f"scale total {scale_total:.6g} does not fit 3 contributors" in failed.reason
    assert published_round_start(actions[1]).round == 2
    assert learner.theta.tolist() == list(THETA0)
    assert learner.iteration == 0
    assert learner.failed_in_a_row == 1


def test_random_scale_total_below_count_accepted(paillier: Paillier) -> None:
    learner = started_learner(paillier)

    actions = complete_round(learner, paillier, scales={"p1": 0.125, "p2": 0.125, "p3": 0.125})

    assert isinstance(actions[0], RoundCompleted), actions[0]


def test_zero_random_scale_total_rejected(paillier: Paillier) -> None:
    learner = started_learner(paillier)

    actions = complete_round(learner, paillier, scales={"p1": 0.0, "p2": 0.0, "p3": 0.0})

    assert isinstance(actions[0], RoundFailed), actions[0]
    assert learner.round == 2


def test_non_finite_gradient_total_rejected(paillier: Paillier) -> None:
    learner = started_learner(paillier)
    deliver_round(learner, paillier)

    actions = learner.total_decrypted(1, np.array([math.inf, 0.5, 1.5]))

    assert isinstance(actions[0], RoundFailed), actions[0]
    assert learner.theta.tolist() == list(THETA0)


def test_total_of_wrong_shape_raises(paillier: Paillier) -> None:
    learner = started_learner(paillier)
    deliver_round(learner, paillier)

    with pytest.raises(ValueError, match=r"expected \(3,\)"):
        learner.total_decrypted(1, np.zeros(2))

    assert learner.state is LearnerState.DECRYPTING


def test_total_for_closed_round_is_stale(paillier: Paillier) -> None:
    learner = started_learner(paillier)

    with pytest.raises(StaleMessageError):
        learner.total_decrypted(1, np.zeros(3))
    deliver_round(learner, paillier)
    with pytest.raises(StaleMessageError):
        learner.total_decrypted(2, np.zeros(3))


def test_invalid_total_repeats_round(paillier: Paillier) -> None:
    learner = started_learner(paillier)
    deliver_round(learner, paillier)

    actions = learner.total_invalid(1, "round 1, slot 0: decoded magnitude exceeds the bound")

    assert actions[0] == RoundFailed(
        round=1, reason="round 1, slot 0: decoded magnitude exceeds the bound"
    )
    assert published_round_start(actions[1]).round == 2
    with pytest.raises(StaleMessageError):
        learner.total_invalid(1, "again")


# Round timeouts


def test_timeout_decrypts_enough_contributors(paillier: Paillier) -> None:
    learner = started_learner(paillier, min_contributors=2)
    learner.receive(contribution(paillier, "a", ["p1", "p2"]))

    actions = learner.round_timed_out(1)

    assert len(actions) == 1
    action = actions[0]
    assert isinstance(action, DecryptTotal), action
    assert action.contributors == ("p1", "p2")
    expected_total = [
        sum(provider_vector(p, SCALES)[slot] for p in ("p1", "p2")) for slot in range(3)
    ]
    totals = decrypt_total(paillier, action)
    assert totals.tolist() == expected_total

    completed = learner.total_decrypted(1, totals)[0]
    assert isinstance(completed, RoundCompleted), completed
    assert completed.contributors == ("p1", "p2")
    np.testing.assert_allclose(
        completed.theta, expected_theta(THETA0, ["p1", "p2"], SCALES, 0.5, 0.01), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize(
    "senders",
    [pytest.param([], id="nothing-arrived"), pytest.param(["a"], id="one-input-of-two")],
)
def test_timeout_with_too_few_repeats_round(paillier: Paillier, senders: list[str]) -> None:
    learner = started_learner(paillier)
    if "a" in senders:
        learner.receive(contribution(paillier, "a", ["p1", "p2"]))

    actions = learner.round_timed_out(1)

    assert not any(isinstance(action, DecryptTotal) for action in actions)
    assert len(actions) == 2
    failed = actions[0]
    assert isinstance(failed, RoundFailed), failed
    assert failed.round == 1
    assert "timed out after 30 s" in failed.reason
    assert "'b'" in failed.reason
    assert published_round_start(actions[1]).round == 2


def test_timeout_of_closed_round_ignored(paillier: Paillier) -> None:
    learner = started_learner(paillier)
    learner.round_timed_out(1)

    assert learner.round_timed_out(1) == []
    assert learner.round == 2
    assert learner.failed_in_a_row == 1


def test_timeout_while_decrypting_ignored(paillier: Paillier) -> None:
    learner = started_learner(paillier)
    deliver_round(learner, paillier)

    assert learner.round_timed_out(1) == []
    assert learner.state is LearnerState.DECRYPTING


# Stopping


def test_stops_at_round_limit(paillier: Paillier) -> None:
    learner = started_learner(paillier, max_rounds=2)
    complete_round(learner, paillier)

    actions = complete_round(learner, paillier)

    assert len(actions) == 3, actions
    assert isinstance(actions[0], RoundCompleted)
    done = published_job_done(actions[1])
    assert done.reason == "reached the round limit of 2"
    assert done.round == 2
    assert done.run == RUN
    assert done.theta == tuple(learner.theta.tolist())
    assert actions[2] == Finished(reason="reached the round limit of 2")
    assert learner.state is LearnerState.FINISHED
    assert learner.finish_reason == "reached the round limit of 2"


def test_stops_when_step_below_tolerance(paillier: Paillier) -> None:
    learner = started_learner(paillier, tolerance=100.0)

    actions = complete_round(learner, paillier)

    assert len(actions) == 3, actions
    completed = actions[0]
    assert isinstance(completed, RoundCompleted)
    assert completed.step < 100.0
    done = published_job_done(actions[1])
    assert done.reason.startswith("converged")
    finished = actions[2]
    assert isinstance(finished, Finished)
    assert finished.reason.startswith("converged")
    assert learner.state is LearnerState.FINISHED


def test_continues_when_step_above_tolerance(paillier: Paillier) -> None:
    learner = started_learner(paillier, tolerance=1e-3)

    actions = complete_round(learner, paillier)

    assert published_round_start(actions[-1]).round == 2
    assert learner.state is LearnerState.COLLECTING


def test_stops_after_failed_rounds_in_a_row(paillier: Paillier) -> None:
    learner = started_learner(paillier, max_failed_rounds=3)
    learner.round_timed_out(1)
    learner.round_timed_out(2)

    actions = learner.round_timed_out(3)

    assert len(actions) == 3, actions
    assert isinstance(actions[0], RoundFailed)
    done = published_job_done(actions[1])
    assert done.reason.startswith("failed")
    assert done.round == 3
    assert done.theta == THETA0
    finished = actions[2]
    assert isinstance(finished, Finished)
    assert finished.reason.startswith("failed")
    assert learner.state is LearnerState.FINISHED


def test_failed_round_count_resets_after_success(paillier: Paillier) -> None:
    learner = started_learner(paillier, max_failed_rounds=3)
    learner.round_timed_out(1)
    learner.round_timed_out(2)
    complete_round(learner, paillier)

    learner.round_timed_out(4)
    actions = learner.round_timed_out(5)

    assert learner.failed_in_a_row == 2
    assert published_round_start(actions[-1]).round == 6
    assert learner.state is LearnerState.COLLECTING


def test_failed_decryptions_count_toward_limit(paillier: Paillier) -> None:
    learner = started_learner(paillier, max_failed_rounds=2)
    learner.round_timed_out(1)
    deliver_round(learner, paillier)

    actions = learner.total_invalid(2, "decryption failed")

    assert published_job_done(actions[1]).reason.startswith("failed")
    assert learner.state is LearnerState.FINISHED


def test_diverging_update_finishes_job(paillier: Paillier) -> None:
    # With a learning rate of 1e300 the first step leaves theta near 1e300 and
    # the second overflows. The learner must end the job with a "diverged"
    # reason instead of raising.
    learner = started_learner(paillier, schedule=StepSchedule(kind="constant", learning_rate=1e300))
    complete_round(learner, paillier)
    action = deliver_round(learner, paillier)

    actions = learner.total_decrypted(2, decrypt_total(paillier, action))

    finished = actions[-1]
    assert isinstance(finished, Finished), finished
    assert finished.reason.startswith("diverged")
    done = published_job_done(actions[-2])
    assert all(math.isfinite(value) for value in done.theta)
    assert learner.state is LearnerState.FINISHED


# Late, stale and duplicate contributions


def test_late_contribution_of_failed_round_is_stale(paillier: Paillier) -> None:
    learner = started_learner(paillier)
    learner.round_timed_out(1)

    with pytest.raises(StaleMessageError, match="round is not open") as caught:
        learner.receive(contribution(paillier, "a", ["p1", "p2"], round=1))

    assert caught.value.round == 1
    assert learner.round == 2
    action = deliver_round(learner, paillier)
    assert action.round == 2
    assert action.contributors == PROVIDERS


def test_contribution_while_decrypting_is_stale(paillier: Paillier) -> None:
    learner = started_learner(paillier)
    deliver_round(learner, paillier)

    with pytest.raises(StaleMessageError, match="round is not open"):
        learner.receive(contribution(paillier, "a", ["p1", "p2"]))


@pytest.mark.parametrize(
    ("changes", "expected_error"),
    [
        pytest.param({"job": "job-2"}, "for job 'job-2'", id="another-job"),
        pytest.param({"run": OTHER_RUN}, "for another run", id="another-run"),
        pytest.param({"round": 2}, "round is not open", id="future-round"),
    ],
)
def test_contribution_outside_round_is_stale(
    paillier: Paillier, changes: dict[str, Any], expected_error: str
) -> None:
    learner = started_learner(paillier)
    message = replace(contribution(paillier, "a", ["p1", "p2"]), **changes)

    with pytest.raises(StaleMessageError, match=expected_error):
        learner.receive(message)

    assert deliver_round(learner, paillier).contributors == PROVIDERS


def test_duplicate_contribution_counted_once(paillier: Paillier) -> None:
    learner = started_learner(paillier)
    learner.receive(contribution(paillier, "a", ["p1", "p2"]))

    with pytest.raises(DuplicateMessageError, match="already counted") as caught:
        learner.receive(contribution(paillier, "a", ["p1", "p2"]))
    actions = learner.receive(contribution(paillier, "b", ["p3"]))

    assert caught.value.sender == "a"
    action = actions[0]
    assert isinstance(action, DecryptTotal), action
    expected = [sum(provider_vector(p, SCALES)[slot] for p in PROVIDERS) for slot in range(3)]
    assert decrypt_total(paillier, action).tolist() == expected


def test_overlapping_contributors_rejected(paillier: Paillier) -> None:
    learner = started_learner(
        paillier, inputs={"a": frozenset({"p1", "p2"}), "b": frozenset({"p2", "p3"})}
    )
    learner.receive(contribution(paillier, "a", ["p1", "p2"]))

    with pytest.raises(DuplicateMessageError, match=r"\['p2'\] are already in this round's total"):
        learner.receive(contribution(paillier, "b", ["p2", "p3"]))
    actions = learner.receive(contribution(paillier, "b", ["p3"]))

    action = actions[0]
    assert isinstance(action, DecryptTotal), action
    assert action.contributors == PROVIDERS


# Contributions the learner rejects


def test_sender_that_is_not_input_rejected(paillier: Paillier) -> None:
    learner = started_learner(paillier)

    with pytest.raises(ProtocolError, match="'p1' is not an input of the learner"):
        learner.receive(contribution(paillier, "p1", ["p1"]))

    assert deliver_round(learner, paillier).contributors == PROVIDERS


def test_unreachable_contributors_rejected(paillier: Paillier) -> None:
    learner = started_learner(paillier)

    with pytest.raises(
        ProtocolError, match=r"contributors \['p3'\] cannot reach the learner through 'a'"
    ):
        learner.receive(contribution(paillier, "a", ["p1", "p3"]))

    assert deliver_round(learner, paillier).contributors == PROVIDERS


@pytest.mark.parametrize(
    "slot_value",
    [
        pytest.param("nsquare", id="n-squared"),
        pytest.param("p", id="p"),
        pytest.param("n", id="n"),
    ],
)
def test_invalid_ciphertext_rejected(paillier: Paillier, slot_value: str) -> None:
    learner = started_learner(paillier)
    values = {
        "nsquare": paillier.public_key.nsquare,
        "p": paillier.private_key.p,
        "n": paillier.public_key.n,
    }
    good = contribution(paillier, "a", ["p1", "p2"])
    bad = replace(good, ciphertexts=(*good.ciphertexts[:-1], values[slot_value]))

    with pytest.raises(ProtocolError, match=r"ciphertext 2 is not in Z\*_\(n\^2\)"):
        learner.receive(bad)

    assert deliver_round(learner, paillier).contributors == PROVIDERS


def test_ciphertexts_of_wrong_length_rejected(paillier: Paillier) -> None:
    learner = started_learner(paillier)
    good = contribution(paillier, "a", ["p1", "p2"])

    with pytest.raises(ProtocolError, match="expected 3 ciphertexts, got 2"):
        learner.receive(replace(good, ciphertexts=good.ciphertexts[:2]))

    assert deliver_round(learner, paillier).contributors == PROVIDERS


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(
            RoundStart(job=JOB, run=RUN, round=1, theta=THETA0, public_key=15, timeout=1.0),
            id="round-start",
        ),
        pytest.param(
            JobDone(job=JOB, run=RUN, round=1, theta=THETA0, reason="converged"), id="job-done"
        ),
    ],
)
def test_learner_rejects_round_topic_messages(
    paillier: Paillier, message: RoundStart | JobDone
) -> None:
    learner = started_learner(paillier)

    with pytest.raises(ProtocolError, match="does not accept"):
        learner.receive(message)


# Invalid transitions


def test_start_twice_raises_invalid_transition(paillier: Paillier) -> None:
    learner = started_learner(paillier)

    with pytest.raises(InvalidTransitionError) as caught:
        learner.start()

    text = str(caught.value)
    assert "learner" in text
    assert "'collecting'" in text
    assert "'start'" in text
    assert learner.round == 1


def test_start_after_finish_raises_invalid_transition(paillier: Paillier) -> None:
    learner = started_learner(paillier, max_rounds=1)
    complete_round(learner, paillier)

    with pytest.raises(
        InvalidTransitionError, match="learner: event 'start' is not allowed in state 'finished'"
    ):
        learner.start()


def test_contribution_after_finish_is_stale(paillier: Paillier) -> None:
    learner = started_learner(paillier, max_rounds=1)
    complete_round(learner, paillier)

    with pytest.raises(StaleMessageError):
        learner.receive(contribution(paillier, "a", ["p1", "p2"]))
    assert learner.round_timed_out(1) == []
    assert learner.state is LearnerState.FINISHED


# Randomisers other than the default scalar one

RANDOMISERS = [
    pytest.param(ScalarRandomiser(), id="scalar"),
    pytest.param(VectorRandomiser(), id="vector"),
    pytest.param(AdditiveRandomiser(), id="additive"),
    pytest.param(UniformRandomiser(), id="uniform"),
    pytest.param(UniformRandomiser(normalise=False), id="uniform-plain"),
]


def randomised_contribution(
    paillier: Paillier,
    randomiser: Randomiser,
    sender: str,
    payload_providers: Sequence[str],
    *,
    draw_random: bool,
    rng: np.random.Generator,
    contributors: Sequence[str] | None = None,
) -> Contribution:
    """Encrypt each provider's payload under ``randomiser`` and add them, as the nodes do.

    ``contributors`` defaults to ``payload_providers``. A different list fakes a
    contribution whose ciphertexts do not match the providers it names.
    """
    total: tuple[int, ...] | None = None
    for provider in payload_providers:
        payload = randomiser.randomise(GRADIENTS[provider], draw_random=draw_random, rng=rng)
        ciphertexts = paillier.encrypt(payload.values.tolist())
        if total is None:
            total = ciphertexts
        else:
            total = tuple(add_vectors(paillier.public_key, total, ciphertexts))
    assert total is not None
    return Contribution(
        job=JOB,
        run=RUN,
        round=1,
        sender=sender,
        contributors=tuple(payload_providers if contributors is None else contributors),
        ciphertexts=total,
    )


def randomiser_learner(
    paillier: Paillier, randomiser: Randomiser, *, randomise: bool
) -> LearnerProtocol:
    return started_learner(
        paillier,
        randomiser=randomiser,
        randomise=randomise,
        ciphertext_count=randomiser.payload_length(len(THETA0)),
    )


def decrypt_randomised_round(
    learner: LearnerProtocol, paillier: Paillier, first: Contribution, second: Contribution
) -> list[Action]:
    assert learner.receive(first) == []
    decrypt = learner.receive(second)[0]
    assert isinstance(decrypt, DecryptTotal), decrypt
    return learner.total_decrypted(1, decrypt_total(paillier, decrypt))


@pytest.mark.parametrize("randomiser", RANDOMISERS)
def test_unrandomised_round_uses_mean(paillier: Paillier, randomiser: Randomiser) -> None:
    learner = randomiser_learner(paillier, randomiser, randomise=False)
    rng = np.random.default_rng(0)

    actions = decrypt_randomised_round(
        learner,
        paillier,
        randomised_contribution(
            paillier, randomiser, "a", ["p1", "p2"], draw_random=False, rng=rng
        ),
        randomised_contribution(paillier, randomiser, "b", ["p3"], draw_random=False, rng=rng),
    )

    mean_gradient = np.mean([GRADIENTS[p] for p in PROVIDERS], axis=0)
    expected = np.array(THETA0) - 0.5 * (mean_gradient + 2 * 0.01 * np.array(THETA0))
    completed = actions[0]
    assert isinstance(completed, RoundCompleted), completed
    np.testing.assert_allclose(completed.theta, expected, rtol=1e-12, atol=0)
    scale_randomiser = not isinstance(randomiser, AdditiveRandomiser) and (
        not isinstance(randomiser, UniformRandomiser) or randomiser.normalise
    )
    assert completed.scale_total == (3.0 if scale_randomiser else None)


@pytest.mark.parametrize("randomiser", RANDOMISERS)
def test_randomised_round_completes(paillier: Paillier, randomiser: Randomiser) -> None:
    learner = randomiser_learner(paillier, randomiser, randomise=True)
    rng = np.random.default_rng(1)

    actions = decrypt_randomised_round(
        learner,
        paillier,
        randomised_contribution(paillier, randomiser, "a", ["p1", "p2"], draw_random=True, rng=rng),
        randomised_contribution(paillier, randomiser, "b", ["p3"], draw_random=True, rng=rng),
    )

    completed = actions[0]
    assert isinstance(completed, RoundCompleted), completed
    assert completed.contributors == PROVIDERS
    assert completed.theta != THETA0
    if completed.scale_total is not None:
        assert 0.0 < completed.scale_total <= 3.0


def test_additive_round_uses_exact_mean(paillier: Paillier) -> None:
    randomiser = AdditiveRandomiser()
    learner = randomiser_learner(paillier, randomiser, randomise=True)
    rng = np.random.default_rng(2)

    actions = decrypt_randomised_round(
        learner,
        paillier,
        randomised_contribution(paillier, randomiser, "a", ["p1", "p2"], draw_random=True, rng=rng),
        randomised_contribution(paillier, randomiser, "b", ["p3"], draw_random=True, rng=rng),
    )

    mean_gradient = np.mean([GRADIENTS[p] for p in PROVIDERS], axis=0)
    expected = np.array(THETA0) - 0.5 * (mean_gradient + 2 * 0.01 * np.array(THETA0))
    completed = actions[0]
    assert isinstance(completed, RoundCompleted), completed
    # Masks near 2**19 leave float64 steps of 2**-33 in each decoded total.
    np.testing.assert_allclose(completed.theta, expected, rtol=0, atol=1e-8)


def test_additive_duplicate_payload_repeats_round(paillier: Paillier) -> None:
    randomiser = AdditiveRandomiser()
    learner = randomiser_learner(paillier, randomiser, randomise=True)
    rng = np.random.default_rng(3)

    actions = decrypt_randomised_round(
        learner,
        paillier,
        randomised_contribution(paillier, randomiser, "a", ["p1", "p2"], draw_random=True, rng=rng),
        # Input b adds p3's payload twice but names p3 once.
        randomised_contribution(
            paillier, randomiser, "b", ["p3", "p3"], draw_random=True, rng=rng, contributors=["p3"]
        ),
    )

    failed = actions[0]
    assert isinstance(failed, RoundFailed), failed
    assert "the decrypted count total 4 does not equal the 3 contributors" in failed.reason
    assert published_round_start(actions[1]).round == 2
    assert learner.theta.tolist() == list(THETA0)


def test_total_length_follows_randomiser(paillier: Paillier) -> None:
    randomiser = VectorRandomiser()
    learner = randomiser_learner(paillier, randomiser, randomise=True)
    rng = np.random.default_rng(4)
    learner.receive(
        randomised_contribution(paillier, randomiser, "a", ["p1", "p2"], draw_random=True, rng=rng)
    )
    learner.receive(
        randomised_contribution(paillier, randomiser, "b", ["p3"], draw_random=True, rng=rng)
    )

    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        learner.total_decrypted(1, np.zeros(3))
