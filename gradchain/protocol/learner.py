"""The learner's round logic, without IO.

Each round the learner samples the round's participants and publishes θ_k.
It waits for one contribution from each input through which a participant
can still arrive, and the inputs of an offline node send around it, straight
to the learner. It acknowledges each contribution (see
:meth:`LearnerProtocol.acks_to_send`) and adds them into one total of
E(Σ a_i·g_i) and E(Σ a_i).
It decrypts the total only if it contains at least ``min_contributors``
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
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from ..crypto import PublicKey
from ..errors import ConfigError, DuplicateMessageError, ProtocolError, StaleMessageError
from ..models.training import StepSchedule, update
from .checks import check_contribution
from .events import (
    Action,
    DecryptTotal,
    Finished,
    PublishRound,
    RoundCompleted,
    RoundFailed,
    SendAck,
)
from .messages import Ack, Contribution, JobDone, Liveness, Message, RoundStart, Status
from .node import InvalidTransitionError
from .routing import awaited_senders, sample_participants


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
    #: Nodes further upstream that send straight to the learner while the nodes
    #: between are offline, each mapped to the providers that can arrive through it.
    rerouted_inputs: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: The direct inputs of each node in ``inputs`` and ``rerouted_inputs``.
    feeders: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Every provider of the topology; empty means the providers behind ``inputs``.
    providers: tuple[str, ...] = ()
    #: Fraction of the providers sampled to contribute in each round.
    sample_fraction: float = 1.0
    #: Seed of the per-round sample.
    seed: int = 0


class LearnerProtocol:
    """Round state machine of the learner."""

    def __init__(
        self, config: LearnerConfig, *, run: str, public_key: PublicKey, theta: np.ndarray
    ) -> None:
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
        #: Providers asked to contribute this round; None means every provider.
        self.participants: frozenset[str] | None = None
        #: Nodes whose latest retained status is offline.
        self.offline: set[str] = set()
        self._acks: list[SendAck] = []

    def _transition(self, event: LearnerEvent) -> None:
        try:
            self.state = LEARNER_TRANSITIONS[self.state, event]
        except KeyError:
            raise InvalidTransitionError("learner", self.state, event) from None

    def start(self) -> list[Action]:
        """Open the first round."""
        self._transition(LearnerEvent.START)
        return [self._open_round(1)]

    def resume(self, *, last_round: int, iteration: int, failed_in_a_row: int = 0) -> list[Action]:
        """Continue a run from a checkpoint by opening the round after ``last_round``.

        θ and the run id come from the constructor. A new round number keeps
        any message of the interrupted round out of the new one.
        """
        if last_round < 0 or iteration < 0 or failed_in_a_row < 0:
            raise ValueError("round, iteration and failed rounds of a checkpoint must be >= 0")
        self._transition(LearnerEvent.START)
        self.iteration = iteration
        self.failed_in_a_row = failed_in_a_row
        return [self._open_round(last_round + 1)]

    def receive(self, message: Message) -> list[Action]:
        """Handle one decoded message addressed to the learner."""
        if message.job != self.config.job:
            raise StaleMessageError(
                f"message for job {message.job!r}, this learner runs {self.config.job!r}"
            )
        if isinstance(message, Status):
            return self._status(message)
        if not isinstance(message, Contribution):
            raise ProtocolError(f"the learner does not accept {type(message).__name__} messages")
        return self._contribution(message)

    def acks_to_send(self) -> list[SendAck]:
        """Return and clear the Acks queued by :meth:`receive`.

        Like :meth:`NodeProtocol.acks_to_send`: counted, duplicate and late
        contributions are acknowledged, invalid ones are not. The shell calls
        this after every :meth:`receive`, also when it raised.
        """
        acks, self._acks = self._acks, []
        return acks

    @property
    def awaited(self) -> frozenset[str]:
        """Inputs from which a contribution can still arrive this round."""
        return awaited_senders(
            self.config.inputs,
            feeders=self.config.feeders,
            carries=self._carries(),
            received=self._received.keys(),
            counted=self._counted(),
            offline=self.offline,
            participants=self.participants,
        )

    def round_timed_out(self, round: int) -> list[Action]:
        """Close ``round`` after its timeout: decrypt what arrived if enough providers are in it."""
        if round != self.round or self.state is not LearnerState.COLLECTING:
            return []
        contributors = self._counted()
        if self._received and len(contributors) >= self.config.min_contributors:
            return self._decrypt()
        missing = sorted(self.awaited or set(self.config.inputs) - set(self._received))
        return self._fail(f"timed out after {self.config.round_timeout:g} s waiting for {missing}")

    def total_decrypted(self, round: int, totals: np.ndarray) -> list[Action]:
        """Update θ from the decrypted total of ``round``.

        ``totals`` contains Σ a_i·g_i followed by Σ a_i.
        """
        if round != self.round or self.state is not LearnerState.DECRYPTING:
            raise StaleMessageError(
                "decrypted total for a round that is no longer open", round=round
            )
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
                scale_total=scale_total,
                participants=None
                if self.participants is None
                else tuple(sorted(self.participants)),
            )
        ]
        if k >= self.config.max_rounds:
            return actions + self._finish(f"reached the round limit of {self.config.max_rounds}")
        if step < self.config.tolerance:
            return actions + self._finish(
                f"converged: update {step:.3g} below tolerance {self.config.tolerance:g}"
            )
        self._transition(LearnerEvent.NEXT_ROUND)
        actions.append(self._open_round(self.round + 1))
        return actions

    def total_invalid(self, round: int, reason: str) -> list[Action]:
        """Repeat ``round`` because its total could not be decrypted or decoded."""
        if round != self.round or self.state is not LearnerState.DECRYPTING:
            raise StaleMessageError("failed total for a round that is no longer open", round=round)
        return self._fail(reason)

    def _contribution(self, message: Contribution) -> list[Action]:
        carries = self._carries()
        if message.run != self.run:
            self._queue_ack(message)
            raise StaleMessageError(
                "contribution for another run", sender=message.sender, round=message.round
            )
        if message.round != self.round or self.state is not LearnerState.COLLECTING:
            self._queue_ack(message)
            raise StaleMessageError("round is not open", sender=message.sender, round=message.round)
        if message.sender not in carries:
            raise ProtocolError(
                f"{message.sender!r} is not an input of the learner",
                sender=message.sender,
                round=message.round,
            )
        if message.sender in self._received:
            self._queue_ack(message)
            raise DuplicateMessageError(
                "contribution already counted", sender=message.sender, round=message.round
            )
        try:
            check_contribution(
                message,
                receiver="the learner",
                reachable=carries[message.sender],
                participants=self.participants,
                counted=self._counted(),
                sum_name="total",
                public_key=self.public_key,
                ciphertext_count=self.config.ciphertext_count,
            )
        except DuplicateMessageError:
            # The sender must stop resending a sum whose providers are counted.
            self._queue_ack(message)
            raise

        self._transition(LearnerEvent.CONTRIBUTION)
        self._received[message.sender] = message
        self._queue_ack(message)
        if not self.awaited:
            return self._decrypt()
        return []

    def _queue_ack(self, message: Contribution) -> None:
        ack = Ack(
            job=self.config.job,
            run=message.run,
            round=message.round,
            sender=self.config.learner_id,
            of=message.sender,
        )
        self._acks.append(SendAck(to=message.sender, message=ack))

    def _status(self, message: Status) -> list[Action]:
        """Track which nodes are offline; decrypt early once nothing more can arrive."""
        if message.state is Liveness.OFFLINE:
            self.offline.add(message.node)
        else:
            self.offline.discard(message.node)
        if self.state is LearnerState.COLLECTING and self._received and not self.awaited:
            return self._decrypt()
        return []

    def _carries(self) -> Mapping[str, frozenset[str]]:
        """Return every accepted sender mapped to the providers that can reach the learner through it."""
        if not self.config.rerouted_inputs:
            return self.config.inputs
        return {**self.config.rerouted_inputs, **self.config.inputs}

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
                    self.public_key.raw_add(a, b)
                    for a, b in zip(total, contribution.ciphertexts, strict=True)
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
                f"failed: {self.failed_in_a_row} rounds in a row could not complete ({reason})",
                succeeded=False,
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
        providers = self.config.providers or sorted(set().union(*self.config.inputs.values()))
        participants = sample_participants(
            providers,
            fraction=self.config.sample_fraction,
            minimum=self.config.min_contributors,
            seed=self.config.seed,
            round=round,
        )
        self.participants = None if participants is None else frozenset(participants)
        start = RoundStart(
            job=self.config.job,
            run=self.run,
            round=round,
            theta=tuple(float(x) for x in self.theta),
            public_key=self.public_key.n,
            public_key_hs=self.public_key.hs,
            timeout=float(self.config.round_timeout),
            participants=participants,
        )
        return PublishRound(message=start)

    def _counted(self) -> set[str]:
        counted: set[str] = set()
        for contribution in self._received.values():
            counted.update(contribution.contributors)
        return counted
