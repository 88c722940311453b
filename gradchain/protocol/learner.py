"""The learner's round logic, without IO.

Each round the learner samples the round's participants and publishes θ_k.
It waits for one contribution from each input through which a participant
can still arrive, and the inputs of an offline node send around it, straight
to the learner. It acknowledges each contribution (see
:meth:`LearnerProtocol.acks_to_send`) and adds them into one encrypted total.
It decrypts the total only if it contains at least ``min_contributors``
providers, each counted once, and then updates

    θ_{k+1} = θ_k - η_k · (d_k + 2λ·θ_k)

where d_k is the direction that the job's randomiser recovers from the
decrypted total (see :mod:`gradchain.randomisers`): (Σ a_i·g_i) / (Σ a_i)
for the default scalar randomiser, with g_i provider i's partial gradient and
a_i ∈ (0, 1] its random scale. η_k is the step size of iteration k and λ the
L2 regularisation strength. A round
that cannot be completed (too few contributors, a timeout, a total that fails
its checks) is repeated under a new round number, so late messages of the
failed attempt can never mix into the new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from ..crypto import PublicKey
from ..errors import ConfigError, DuplicateMessageError, ProtocolError, StaleMessageError
from ..models.training import StepSchedule, update
from ..randomisers import Randomiser, ScalarRandomiser, TotalsCheckError
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
from .routing import awaited_senders, blocked_providers, sample_participants


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
    #: The job's randomiser, which turns the decrypted totals into a direction.
    #: ``ciphertext_count`` must be the ciphertext count of its payload.
    randomiser: Randomiser = field(default_factory=ScalarRandomiser)
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
    #: Each provider that splits its contribution into portions, mapped to the
    #: nodes (learner excluded) that each of its portions passes. Such a provider
    #: counts as a contributor only once every one of its portions is in the total.
    portion_routes: Mapping[str, tuple[frozenset[str], ...]] = field(default_factory=dict)
    #: Digest of the learner's topology settings, sent in every RoundStart.
    settings_digest: str | None = None


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
        carries = self._carries()
        if not self.config.portion_routes:
            # Every provider arrives once, so provider ids name the contributions.
            # Building (provider, portion) keys for every upstream node on each
            # call would cost O(N²) in a chain of N nodes.
            return awaited_senders(
                self.config.inputs,
                feeders=self.config.feeders,
                carries=carries,
                received=self._received.keys(),
                counted=self._counted(),
                offline=self.offline,
                participants=self.participants,
            )
        participants = None
        # A provider whose portion lost every node on its route sends nothing,
        # also when that happens in the middle of a round.
        blocked = blocked_providers(self.config.portion_routes, self.offline)
        if self.participants is not None or blocked:
            everyone = self.participants
            if everyone is None:
                everyone = frozenset().union(*carries.values())
            participants = {
                (provider, portion)
                for provider in everyone - blocked
                for portion in range(len(self.config.portion_routes.get(provider, (0,))))
            }
        return awaited_senders(
            self.config.inputs,
            feeders=self.config.feeders,
            carries={
                sender: self._portion_keys(sender, providers, strict=False)
                for sender, providers in carries.items()
            },
            received=self._received.keys(),
            counted=self._counted_portions(),
            offline=self.offline,
            participants=participants,
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

        ``totals`` is the slot-wise sum of the contributors' payloads, laid out as
        the job's randomiser defines. Totals that fail the randomiser's check
        repeat the round. Raises ValueError for totals of the wrong length.
        """
        if round != self.round or self.state is not LearnerState.DECRYPTING:
            raise StaleMessageError(
                "decrypted total for a round that is no longer open", round=round
            )
        contributors = tuple(sorted(self._counted()))
        count = len(contributors)
        randomiser = self.config.randomiser
        expected_shape = (randomiser.payload_length(self.config.parameters),)
        if totals.shape != expected_shape:
            raise ValueError(f"decrypted total has shape {totals.shape}, expected {expected_shape}")
        try:
            recovered = randomiser.recover(totals, count, draw_random=self.config.randomise)
        except TotalsCheckError as error:
            return self._fail(str(error))

        direction = recovered.direction
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
                scale_total=recovered.scale_total,
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
        unknown = set(message.contributors) - carries[message.sender]
        keys = self._portion_keys(message.sender, set(message.contributors) - unknown)
        counted_portions = self._counted_portions()
        try:
            check_contribution(
                message,
                receiver="the learner",
                reachable=carries[message.sender],
                participants=self.participants,
                # A provider that splits its contribution arrives once per portion,
                # so only the portion this sender carries may not be counted yet.
                counted={
                    provider
                    for provider, portion in keys
                    if (provider, portion) in counted_portions
                },
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
        partial = self._partly_counted()
        if partial:
            # A missing portion is a random share mod n, so the total would decode
            # to noise, and it cannot be taken out of the sums that carry the others.
            return self._fail(
                f"providers {sorted(partial)} split their contributions into portions and "
                f"portions {[partial[p] for p in sorted(partial)]} of them are missing, "
                "so the total cannot be decrypted"
            )
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
        # A provider with a portion whose aggregators are all offline sends nothing,
        # so no node waits for it, unless leaving it out would leave too few providers.
        blocked = blocked_providers(self.config.portion_routes, self.offline)
        reachable = [provider for provider in providers if provider not in blocked]
        leave_out = bool(blocked) and len(reachable) >= self.config.min_contributors
        if leave_out:
            providers = reachable
        participants = sample_participants(
            providers,
            fraction=self.config.sample_fraction,
            minimum=self.config.min_contributors,
            seed=self.config.seed,
            round=round,
        )
        if participants is None and leave_out:
            participants = tuple(sorted(providers))
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
            settings=self.config.settings_digest,
        )
        return PublishRound(message=start)

    def _counted(self) -> set[str]:
        counted: set[str] = set()
        for contribution in self._received.values():
            counted.update(contribution.contributors)
        return counted

    def _counted_portions(self) -> set[tuple[str, int]]:
        counted: set[tuple[str, int]] = set()
        for sender, contribution in self._received.items():
            counted.update(self._portion_keys(sender, contribution.contributors))
        return counted

    def _partly_counted(self) -> dict[str, list[int]]:
        """Return the providers of which some portions, but not all, are counted, with the missing ones."""
        counted = self._counted_portions()
        partial: dict[str, list[int]] = {}
        for provider, routes in self.config.portion_routes.items():
            missing = [m for m in range(len(routes)) if (provider, m) not in counted]
            if missing and len(missing) < len(routes):
                partial[provider] = missing
        return partial

    def _portion_keys(
        self, sender: str, providers: Iterable[str], *, strict: bool = True
    ) -> frozenset[tuple[str, int]]:
        """Return (provider, portion) for each provider whose contribution ``sender`` carries.

        A provider that does not split its contribution has portion 0. A
        split provider's portion is the one whose path passes ``sender``.
        With ``strict``, a split provider whose portions do not pass
        ``sender`` raises ProtocolError, and otherwise it is left out.
        """
        keys: set[tuple[str, int]] = set()
        for provider in providers:
            routes = self.config.portion_routes.get(provider)
            if routes is None:
                keys.add((provider, 0))
                continue
            portion = next((m for m, route in enumerate(routes) if sender in route), None)
            if portion is not None:
                keys.add((provider, portion))
            elif strict:
                raise ProtocolError(
                    f"{sender!r} carries provider {provider!r}, which splits its contribution "
                    "and sends no portion through it"
                )
        return frozenset(keys)
