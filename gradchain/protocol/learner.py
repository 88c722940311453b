"""The learner's round logic, without IO.

Each round the learner publishes θ_k, waits for one contribution from each of
its inputs, and adds them into one total of E(Σ a_i·g_i) and E(Σ a_i). It
decrypts the total only if it contains at least ``min_contributors``
providers, each counted once, and then updates

    θ_{k+1} = θ_k − η_k · ((Σ a_i·g_i) / (Σ a_i) + 2λ·θ_k)

where g_i is provider i's partial gradient, a_i ∈ (0, 1] its random scale,
η_k the step size of iteration k and λ the L2 regularisation strength. A round
that cannot be completed (too few contributors, a timeout, a total that fails
its checks) is repeated under a new round number, so late messages of the
failed attempt can never mix into the new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import numpy as np

from ..crypto import PublicKey
from ..errors import ConfigError, DuplicateMessageError, ProtocolError, StaleMessageError
from ..models.training import StepSchedule, update
from .events import Action, DecryptTotal, Finished, PublishRound, RoundCompleted, RoundFailed
from .messages import Contribution, JobDone, Message, RoundStart, Status
from .node import InvalidTransitionError


class LearnerState(Enum):
    IDLE = "idle"
    COLLECTING = "collecting"
    DECRYPTING = "decrypting"
    FINISHED = "finished"


class LearnerEvent(Enum):
    START = "start"
    CONTRIBUTION = "contribution"
    DECRYPT = "decrypt"
    NEXT_ROUND = "next round"
    FINISH = "finish"


LEARNER_TRANSITIONS: dict[tuple[LearnerState, LearnerEvent], LearnerState] = {
    (LearnerState.IDLE, LearnerEvent.START): LearnerState.COLLECTING,
    (LearnerState.COLLECTING, LearnerEvent.CONTRIBUTION): LearnerState.COLLECTING,
    (LearnerState.COLLECTING, LearnerEvent.DECRYPT): LearnerState.DECRYPTING,
    (LearnerState.COLLECTING, LearnerEvent.NEXT_ROUND): LearnerState.COLLECTING,
    (LearnerState.DECRYPTING, LearnerEvent.NEXT_ROUND): LearnerState.COLLECTING,
    (LearnerState.COLLECTING, LearnerEvent.FINISH): LearnerState.FINISHED,
    (LearnerState.DECRYPTING, LearnerEvent.FINISH): LearnerState.FINISHED,
}


@dataclass(frozen=True, kw_only=True)
class LearnerConfig:
    """Job settings the learner's state machine needs."""

    job: str
    learner_id: str
    #: Each input's id mapped to the providers that can reach the learner through it.
    inputs: Mapping[str, frozenset[str]]
    min_contributors: int
    parameters: int
    ciphertext_count: int
    randomise: bool
    schedule: StepSchedule
    l2: float
    max_rounds: int
    tolerance: float
    round_timeout: float
    #: Consecutive failed rounds after which the job stops with an error.
    max_failed_rounds: int = 5


class LearnerProtocol:
    """Round state machine of the learner."""

    def __init__(self, config: LearnerConfig, *, run: str, public_key: PublicKey, theta: np.ndarray) -> None:
        if theta.shape != (config.parameters,):
            raise ValueError(f"theta has shape {theta.shape}, expected ({config.parameters},)")
        self.config = config
        self.run = run
        self.public_key = public_key
        self.theta = np.array(theta, dtype=float)
        self.state = LearnerState.IDLE
        self.round = 0
        #: Successful updates so far; iteration k uses step size η_k with k = iteration + 1.
        self.iteration = 0
        self.failed_in_a_row = 0
        self.finish_reason: str | None = None
        self._received: dict[str, Contribution] = {}

    def _transition(self, event: LearnerEvent) -> None:
        try:
            self.state = LEARNER_TRANSITIONS[self.state, event]
        except KeyError:
            raise InvalidTransitionError("learner", self.state, event) from None

    def start(self) -> list[Action]:
        """Open the first round."""
        self._transition(LearnerEvent.START)
        return [self._open_round(1)]

    def receive(self, message: Message) -> list[Action]:
        """Handle one decoded message addressed to the learner."""
        if message.job != self.config.job:
            raise StaleMessageError(f"message for job {message.job!r}, this learner runs {self.config.job!r}")
        if isinstance(message, Status):
            return []
        if not isinstance(message, Contribution):
            raise ProtocolError(f"the learner does not accept {type(message).__name__} messages")
        return self._contribution(message)

    def round_timed_out(self, round: int) -> list[Action]:
        """Close ``round`` after its timeout: decrypt what arrived if enough providers are in it."""
        if round != self.round or self.state is not LearnerState.COLLECTING:
            return []
        contributors = self._counted()
        if self._received and len(contributors) >= self.config.min_contributors:
            return self._decrypt()
        missing = sorted(set(self.config.inputs) - set(self._received))
        return self._fail(f"timed out after {self.config.round_timeout:g} s waiting for {missing}")

    def total_decrypted(self, round: int, totals: np.ndarray) -> list[Action]:
        """Update θ from the decrypted total of ``round``.

        ``totals`` holds Σ a_i·g_i followed by Σ a_i.
        """
        if round != self.round or self.state is not LearnerState.DECRYPTING:
            raise StaleMessageError("decrypted total for a round that is no longer open", round=round)
        contributors = tuple(sorted(self._counted()))
        count = len(contributors)
        expected_shape = (self.config.parameters + 1,)
        if totals.shape != expected_shape:
            raise ValueError(f"decrypted total has shape {totals.shape}, expected {expected_shape}")
        gradient_total, scale_total = totals[:-1], float(totals[-1])

        # Each a_i lies in (0, 1] and is exactly 1 with randomisation off, so
        # the scale total is a cheap check that no provider was added twice.
        tolerance = 1e-6 * max(count, 1)
        if self.config.randomise:
            valid = 0.0 < scale_total <= count + tolerance
        else:
            valid = abs(scale_total - count) <= tolerance
        if not valid or not np.all(np.isfinite(gradient_total)):
            return self._fail(
                f"the decrypted scale total {scale_total:.6g} does not fit {count} contributors; "
                "a contribution was counted twice or corrupted"
            )

        direction = gradient_total / scale_total
        k = self.iteration + 1
        learning_rate = self.config.schedule.step_size(k)
        try:
            new_theta = update(self.theta, direction, k, self.config.schedule, self.config.l2)
        except ConfigError as error:
            # θ stays at its last finite value, which JobDone then publishes.
            return self._finish(f"diverged: {error}", succeeded=False)
        step = float(np.max(np.abs(new_theta - self.theta)))
        self.theta = new_theta
        self.iteration = k
        self.failed_in_a_row = 0

        actions: list[Action] = [
            RoundCompleted(
                round=round,
                iteration=k,
                theta=tuple(float(x) for x in new_theta),
                contributors=contributors,
                step=step,
                learning_rate=learning_rate,
            )
        ]
        if k >= self.config.max_rounds:
            return actions + self._finish(f"reached the round limit of {self.config.max_rounds}")
        if step < self.config.tolerance:
            return actions + self._finish(f"converged: update {step:.3g} below tolerance {self.config.tolerance:g}")
        self._transition(LearnerEvent.NEXT_ROUND)
        actions.append(self._open_round(self.round + 1))
        return actions

    def total_invalid(self, round: int, reason: str) -> list[Action]:
        """Repeat ``round`` because its total could not be decrypted or decoded."""
        if round != self.round or self.state is not LearnerState.DECRYPTING:
            raise StaleMessageError("failed total for a round that is no longer open", round=round)
        return self._fail(reason)

    def _contribution(self, message: Contribution) -> list[Action]:
        if message.run != self.run:
            raise StaleMessageError("contribution for another run", sender=message.sender, round=message.round)
        if message.round != self.round or self.state is not LearnerState.COLLECTING:
            raise StaleMessageError("round is not open", sender=message.sender, round=message.round)
        if message.sender not in self.config.inputs:
            raise ProtocolError(
                f"{message.sender!r} is not an input of the learner", sender=message.sender, round=message.round
            )
        if message.sender in self._received:
            raise DuplicateMessageError("contribution already counted", sender=message.sender, round=message.round)
        unknown = sorted(set(message.contributors) - self.config.inputs[message.sender])
        if unknown:
            raise ProtocolError(
                f"contributors {unknown} cannot reach the learner through {message.sender!r}",
                sender=message.sender,
                round=message.round,
            )
        overlap = sorted(set(message.contributors) & self._counted())
        if overlap:
            raise DuplicateMessageError(
                f"contributors {overlap} are already in this round's total",
                sender=message.sender,
                round=message.round,
            )
        if len(message.ciphertexts) != self.config.ciphertext_count:
            raise ProtocolError(
                f"expected {self.config.ciphertext_count} ciphertexts, got {len(message.ciphertexts)}",
                sender=message.sender,
                round=message.round,
            )
        for index, value in enumerate(message.ciphertexts):
            if not self.public_key.is_valid_ciphertext(value):
                raise ProtocolError(
                    f"ciphertext {index} is not in Z*_(n^2)", sender=message.sender, round=message.round
                )

        self._transition(LearnerEvent.CONTRIBUTION)
        self._received[message.sender] = message
        if set(self._received) == set(self.config.inputs):
            return self._decrypt()
        return []

    def _decrypt(self) -> list[Action]:
        contributors = tuple(sorted(self._counted()))
        if len(contributors) < self.config.min_contributors:
            # Decrypting a total of too few providers could expose one provider's gradient.
            return self._fail(
                f"only {len(contributors)} contributors, at least {self.config.min_contributors} are required"
            )
        total: tuple[int, ...] | None = None
        for contribution in self._received.values():
            if total is None:
                total = contribution.ciphertexts
            else:
                total = tuple(
                    self.public_key.raw_add(a, b) for a, b in zip(total, contribution.ciphertexts, strict=True)
                )
        assert total is not None
        self._transition(LearnerEvent.DECRYPT)
        return [DecryptTotal(round=self.round, ciphertexts=total, contributors=contributors)]

    def _fail(self, reason: str) -> list[Action]:
        failed_round = self.round
        self.failed_in_a_row += 1
        actions: list[Action] = [RoundFailed(round=failed_round, reason=reason)]
        if self.failed_in_a_row >= self.config.max_failed_rounds:
            return actions + self._finish(
                f"failed: {self.failed_in_a_row} rounds in a row could not complete ({reason})", succeeded=False
            )
        self._transition(LearnerEvent.NEXT_ROUND)
        actions.append(self._open_round(self.round + 1))
        return actions

    def _finish(self, reason: str, *, succeeded: bool = True) -> list[Action]:
        self._transition(LearnerEvent.FINISH)
        self.finish_reason = reason
        done = JobDone(
            job=self.config.job,
            run=self.run,
            round=self.round,
            theta=tuple(float(x) for x in self.theta),
            reason=reason,
        )
        return [PublishRound(message=done), Finished(reason=reason, succeeded=succeeded)]

    def _open_round(self, round: int) -> PublishRound:
        self.round = round
        self._received = {}
        start = RoundStart(
            job=self.config.job,
            run=self.run,
            round=round,
            theta=tuple(float(x) for x in self.theta),
            public_key=self.public_key.n,
            timeout=float(self.config.round_timeout),
        )
        return PublishRound(message=start)

    def _counted(self) -> set[str]:
        counted: set[str] = set()
        for contribution in self._received.values():
            counted.update(contribution.contributors)
        return counted
