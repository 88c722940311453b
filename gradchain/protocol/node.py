"""The round logic of a provider or aggregator node, without IO.

A node learns from the topology which nodes feed it (its inputs) and where
its sum goes (its successor). Each round it:

1. receives ``RoundStart`` and, if it holds data, asks its shell to compute
   and encrypt its own contribution at once, without waiting for its inputs;
2. collects one ``Contribution`` from each input, checking that every
   ciphertext is in Z*_{n²} and that no provider is counted twice;
3. once it has every input and its own share, adds them homomorphically and
   forwards exactly one ``Contribution`` to its successor.

Messages that do not fit (another job or run, an old round, a sender that is
not an input, a duplicate) raise a :class:`~gradchain.errors.ProtocolError`
subclass; the shell logs it and the sum is left untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from ..crypto import PublicKey
from ..errors import DuplicateMessageError, ProtocolError, StaleMessageError
from .events import Action, ComputeContribution, Dropped, Finished, SendContribution
from .messages import Contribution, JobDone, Message, RoundStart, Status


class NodeState(Enum):
    IDLE = "idle"
    COLLECTING = "collecting"
    FORWARDED = "forwarded"
    FINISHED = "finished"


class NodeEvent(Enum):
    ROUND_START = "round start"
    CONTRIBUTION = "contribution"
    OWN_CONTRIBUTION = "own contribution"
    FORWARD = "forward"
    JOB_DONE = "job done"


#: Every legal transition of a node; anything else is a bug in the caller.
NODE_TRANSITIONS: dict[tuple[NodeState, NodeEvent], NodeState] = {
    (NodeState.IDLE, NodeEvent.ROUND_START): NodeState.COLLECTING,
    (NodeState.COLLECTING, NodeEvent.ROUND_START): NodeState.COLLECTING,
    (NodeState.FORWARDED, NodeEvent.ROUND_START): NodeState.COLLECTING,
    (NodeState.COLLECTING, NodeEvent.CONTRIBUTION): NodeState.COLLECTING,
    (NodeState.COLLECTING, NodeEvent.OWN_CONTRIBUTION): NodeState.COLLECTING,
    (NodeState.COLLECTING, NodeEvent.FORWARD): NodeState.FORWARDED,
    (NodeState.IDLE, NodeEvent.JOB_DONE): NodeState.FINISHED,
    (NodeState.COLLECTING, NodeEvent.JOB_DONE): NodeState.FINISHED,
    (NodeState.FORWARDED, NodeEvent.JOB_DONE): NodeState.FINISHED,
}


class InvalidTransitionError(RuntimeError):
    """A state machine was driven in a way its transition table does not allow."""

    def __init__(self, role: str, state: Enum, event: Enum) -> None:
        super().__init__(f"{role}: event {event.value!r} is not allowed in state {state.value!r}")


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """What a node needs to know from the topology and the job settings."""

    job: str
    node_id: str
    successor: str
    #: Each input's id mapped to the providers whose contributions can reach us through it.
    inputs: Mapping[str, frozenset[str]]
    is_provider: bool
    #: Length of θ.
    parameters: int
    #: Ciphertexts per contribution under the job's encoding.
    ciphertext_count: int
    #: Bit length the learner's modulus n must have.
    key_bits: int
    #: Fingerprint the learner's key must have, when the topology pins one.
    key_fingerprint: str | None = None


class NodeProtocol:
    """Round state machine of one provider or aggregator node."""

    #: How many early contributions (for a round not yet started here) are kept.
    MAX_EARLY = 256

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.state = NodeState.IDLE
        self.run: str | None = None
        self.round = 0
        self.public_key: PublicKey | None = None
        self._received: dict[str, Contribution] = {}
        self._own: tuple[int, ...] | None = None
        self._early: dict[tuple[str, int, str], Contribution] = {}

    def _transition(self, event: NodeEvent) -> None:
        try:
            self.state = NODE_TRANSITIONS[self.state, event]
        except KeyError:
            raise InvalidTransitionError(f"node {self.config.node_id}", self.state, event) from None

    def receive(self, message: Message) -> list[Action]:
        """Handle one decoded message and return what to do next."""
        if message.job != self.config.job:
            raise StaleMessageError(f"message for job {message.job!r}, this node runs {self.config.job!r}")
        if isinstance(message, RoundStart):
            return self._round_start(message)
        if isinstance(message, Contribution):
            return self._contribution(message)
        if isinstance(message, JobDone):
            return self._job_done(message)
        if isinstance(message, Status):
            return []
        raise ProtocolError(f"unexpected message {type(message).__name__}")

    def own_contribution_ready(self, round: int, ciphertexts: Sequence[int]) -> list[Action]:
        """Accept this node's own encrypted contribution for ``round``."""
        if self.state is not NodeState.COLLECTING or round != self.round:
            raise StaleMessageError(
                f"own contribution for round {round} arrived after the node moved to round {self.round}"
            )
        if not self.config.is_provider:
            raise ProtocolError(f"node {self.config.node_id} holds no data but produced a contribution")
        if self._own is not None:
            raise DuplicateMessageError("own contribution computed twice", round=round)
        self._check_ciphertexts(tuple(ciphertexts), sender=self.config.node_id, round=round)
        self._transition(NodeEvent.OWN_CONTRIBUTION)
        self._own = tuple(ciphertexts)
        return self._forward_if_complete()

    def _round_start(self, message: RoundStart) -> list[Action]:
        if message.run == self.run:
            if message.round < self.round:
                raise StaleMessageError("round already closed", round=message.round)
            if message.round == self.round:
                raise DuplicateMessageError("round already started", round=message.round)
        if self.state is NodeState.FINISHED:
            raise StaleMessageError("the job has finished here", round=message.round)
        if len(message.theta) != self.config.parameters:
            raise ProtocolError(
                f"theta has {len(message.theta)} parameters, the topology says {self.config.parameters}",
                round=message.round,
            )
        key = PublicKey(n=message.public_key)
        if key.n.bit_length() != self.config.key_bits:
            raise ProtocolError(
                f"the learner's key has {key.n.bit_length()} bits, the topology says {self.config.key_bits}",
                round=message.round,
            )
        pin = self.config.key_fingerprint
        if pin is not None and key.fingerprint != pin:
            raise ProtocolError(
                f"the learner's key fingerprint {key.fingerprint} does not match the pinned {pin}",
                round=message.round,
            )

        self._transition(NodeEvent.ROUND_START)
        self.run = message.run
        self.round = message.round
        self.public_key = key
        self._received = {}
        self._own = None

        actions: list[Action] = []
        if self.config.is_provider:
            actions.append(
                ComputeContribution(round=message.round, theta=message.theta, public_key=message.public_key)
            )
        early = [c for (run, rnd, _), c in self._early.items() if run == self.run and rnd == self.round]
        self._early = {k: c for k, c in self._early.items() if k[0] == self.run and k[1] > self.round}
        for contribution in early:
            # Early contributions could not be checked against the key before
            # now; one bad message must not cost the round its valid ones.
            try:
                actions.extend(self._contribution(contribution))
            except ProtocolError as error:
                actions.append(Dropped(error=error))
        return actions

    def _contribution(self, message: Contribution) -> list[Action]:
        if message.sender not in self.config.inputs:
            raise ProtocolError(
                f"{message.sender!r} is not an input of node {self.config.node_id}",
                sender=message.sender,
                round=message.round,
            )
        if message.run != self.run or message.round > self.round:
            return self._keep_early(message)
        if message.round < self.round:
            raise StaleMessageError("round already closed", sender=message.sender, round=message.round)
        if message.sender in self._received:
            raise DuplicateMessageError("contribution already counted", sender=message.sender, round=message.round)
        if self.state is not NodeState.COLLECTING:
            raise StaleMessageError(
                f"the node already forwarded its sum (state {self.state.value})",
                sender=message.sender,
                round=message.round,
            )

        allowed = self.config.inputs[message.sender]
        unknown = sorted(set(message.contributors) - allowed)
        if unknown:
            raise ProtocolError(
                f"contributors {unknown} cannot reach this node through {message.sender!r}",
                sender=message.sender,
                round=message.round,
            )
        overlap = sorted(set(message.contributors) & self._counted())
        if overlap:
            raise DuplicateMessageError(
                f"contributors {overlap} are already in this round's sum",
                sender=message.sender,
                round=message.round,
            )
        self._check_ciphertexts(message.ciphertexts, sender=message.sender, round=message.round)

        self._transition(NodeEvent.CONTRIBUTION)
        self._received[message.sender] = message
        return self._forward_if_complete()

    def _keep_early(self, message: Contribution) -> list[Action]:
        """Buffer a contribution that overtook its RoundStart on another topic."""
        key = (message.run, message.round, message.sender)
        if key in self._early:
            raise DuplicateMessageError("early contribution already buffered", sender=message.sender)
        if len(self._early) >= self.MAX_EARLY:
            raise StaleMessageError(
                "too many contributions for rounds that have not started here",
                sender=message.sender,
                round=message.round,
            )
        self._early[key] = message
        return []

    def _job_done(self, message: JobDone) -> list[Action]:
        # A retained JobDone left by an earlier run must not stop a node that
        # is waiting for the next run to start.
        if self.run is None:
            raise StaleMessageError("job done for a run this node never joined", round=message.round)
        if message.run != self.run:
            raise StaleMessageError("job done for another run", round=message.round)
        if self.state is NodeState.FINISHED:
            raise DuplicateMessageError("job done already received", round=message.round)
        self._transition(NodeEvent.JOB_DONE)
        return [Finished(reason=message.reason)]

    def _counted(self) -> set[str]:
        counted: set[str] = set()
        for contribution in self._received.values():
            counted.update(contribution.contributors)
        return counted

    def _check_ciphertexts(self, ciphertexts: tuple[int, ...], *, sender: str, round: int) -> None:
        assert self.public_key is not None
        expected = self.config.ciphertext_count
        if len(ciphertexts) != expected:
            raise ProtocolError(
                f"expected {expected} ciphertexts, got {len(ciphertexts)}", sender=sender, round=round
            )
        for index, value in enumerate(ciphertexts):
            if not self.public_key.is_valid_ciphertext(value):
                raise ProtocolError(
                    f"ciphertext {index} is not in Z*_(n^2) for the learner's key",
                    sender=sender,
                    round=round,
                )

    def _forward_if_complete(self) -> list[Action]:
        if self.config.is_provider and self._own is None:
            return []
        if set(self._received) != set(self.config.inputs):
            return []
        assert self.public_key is not None and self.run is not None
        total: tuple[int, ...] | None = self._own
        contributors = set(self._counted())
        if self._own is not None:
            contributors.add(self.config.node_id)
        for contribution in self._received.values():
            if total is None:
                total = contribution.ciphertexts
            else:
                total = tuple(
                    self.public_key.raw_add(a, b) for a, b in zip(total, contribution.ciphertexts, strict=True)
                )
        assert total is not None
        self._transition(NodeEvent.FORWARD)
        message = Contribution(
            job=self.config.job,
            run=self.run,
            round=self.round,
            sender=self.config.node_id,
            contributors=tuple(sorted(contributors)),
            ciphertexts=total,
        )
        return [SendContribution(to=self.config.successor, message=message)]
