"""The round logic of a provider or aggregator node, without IO.

A node learns from the topology which nodes feed it (its inputs) and where
its sum goes (its successor). Each round it:

1. receives ``RoundStart`` and, if it is a provider among the round's
   participants, has its shell compute and encrypt its own contribution at
   once, without waiting for its inputs;
2. collects one ``Contribution`` from each input, checking that every
   ciphertext is in Z*_{n²} and that no provider is counted twice, and queues
   an ``Ack`` for the sender (see :meth:`NodeProtocol.acks_to_send`);
3. once nothing more can arrive, or at its deadline, adds what it has
   homomorphically and forwards exactly one ``Contribution`` to the first
   online node on its path to the learner, resending it until an ``Ack``
   comes back or the round is over.

The node stops waiting for an input that is offline, or through which no
participant can arrive; the inputs of an offline node send around it. The
deadline is ``RoundStart.timeout`` times ``NodeConfig.deadline_share``; the
shell calls :meth:`NodeProtocol.deadline_reached` when it passes.

Messages that do not fit (another job or run, an old round, a sender whose
path does not pass through this node, a duplicate) raise a
:class:`~gradchain.errors.ProtocolError` subclass; the shell logs it and the
sum is left untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from ..crypto import PublicKey
from ..errors import (
    DuplicateMessageError,
    ProtocolError,
    SettingsMismatchError,
    StaleMessageError,
)
from .checks import check_ciphertexts, check_contribution
from .events import Action, ComputeContribution, Dropped, Finished, SendAck, SendContribution
from .messages import Ack, Contribution, JobDone, Liveness, Message, RoundStart, Status
from .routing import awaited_senders, blocked_providers, next_online


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
    ACK = "ack"
    JOB_DONE = "job done"


#: Every legal transition of a node; anything else is a bug in the caller.
NODE_TRANSITIONS: dict[tuple[NodeState, NodeEvent], NodeState] = {
    (NodeState.IDLE, NodeEvent.ROUND_START): NodeState.COLLECTING,
    (NodeState.COLLECTING, NodeEvent.ROUND_START): NodeState.COLLECTING,
    (NodeState.FORWARDED, NodeEvent.ROUND_START): NodeState.COLLECTING,
    (NodeState.COLLECTING, NodeEvent.CONTRIBUTION): NodeState.COLLECTING,
    (NodeState.COLLECTING, NodeEvent.OWN_CONTRIBUTION): NodeState.COLLECTING,
    (NodeState.COLLECTING, NodeEvent.FORWARD): NodeState.FORWARDED,
    (NodeState.FORWARDED, NodeEvent.ACK): NodeState.FORWARDED,
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
    """Settings a node takes from the topology and the job."""

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
    #: The learner's public key as read from its public key file, when the node has that
    #: file. A RoundStart under any other key (n or h_s) is rejected, so a client that
    #: impersonates the learner on the broker cannot make the node encrypt under its key.
    pinned_key: PublicKey | None = None
    #: Nodes after ``successor`` on the path to the learner, which ends the tuple.
    #: The node sends to the first of them that is online while ``successor`` is offline.
    fallbacks: tuple[str, ...] = ()
    #: Nodes further upstream whose path passes through this node, each mapped to
    #: the providers whose contributions can reach us through it. They send here
    #: while the nodes between them and us are offline.
    rerouted_inputs: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: The direct inputs of each node in ``inputs`` and ``rerouted_inputs``.
    feeders: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Fraction of ``RoundStart.timeout`` after which the node forwards what it has.
    deadline_share: float = 1.0
    #: For a provider that splits its contribution into portions, the path of each
    #: portion: the nodes after this one, ending with the learner. Empty for a node
    #: that sends one contribution along ``successor`` and ``fallbacks``.
    portion_paths: tuple[tuple[str, ...], ...] = ()
    #: Digest of this node's topology settings; a RoundStart with another digest is rejected.
    settings_digest: str | None = None
    #: Each upstream provider that splits its contribution, mapped to the nodes each of its
    #: portions passes (learner excluded). The node stops waiting for such a provider
    #: while one of its portions has no online node, because the provider then sends nothing.
    portion_routes: Mapping[str, tuple[frozenset[str], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.portion_paths and (len(self.portion_paths) < 2 or self.inputs):
            raise ValueError(
                "portion_paths needs at least two paths and a node without inputs, got "
                f"{len(self.portion_paths)} paths and inputs {sorted(self.inputs)}"
            )


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
        #: This round's own contribution split into portions, when the node splits it.
        self._own_portions: tuple[tuple[int, ...], ...] | None = None
        self._early: dict[tuple[str, int, str], Contribution] = {}
        #: Providers asked to contribute this round; None means every provider.
        self.participants: frozenset[str] | None = None
        #: Nodes whose latest retained status is offline.
        self.offline: set[str] = set()
        #: ``RoundStart.timeout`` of the current round, in seconds.
        self.timeout: float | None = None
        self._past_deadline = False
        #: What this node forwarded this round, by portion (0 when it does not split).
        self._outgoing: dict[int, SendContribution] = {}
        #: The node that acknowledged each forwarded portion.
        self._acked_by: dict[int, str] = {}
        self._acks: list[SendAck] = []

    def _transition(self, event: NodeEvent) -> None:
        try:
            self.state = NODE_TRANSITIONS[self.state, event]
        except KeyError:
            raise InvalidTransitionError(f"node {self.config.node_id}", self.state, event) from None

    def receive(self, message: Message) -> list[Action]:
        """Handle one decoded message and return what to do next."""
        if message.job != self.config.job:
            raise StaleMessageError(
                f"message for job {message.job!r}, this node runs {self.config.job!r}"
            )
        if isinstance(message, RoundStart):
            return self._round_start(message)
        if isinstance(message, Contribution):
            return self._contribution(message)
        if isinstance(message, Ack):
            return self._ack(message)
        if isinstance(message, JobDone):
            return self._job_done(message)
        if isinstance(message, Status):
            return self._status(message)
        raise ProtocolError(f"unexpected message {type(message).__name__}")

    def acks_to_send(self) -> list[SendAck]:
        """Return and clear the Acks queued by :meth:`receive`.

        A contribution that was counted, had already been counted, or came
        too late for its round is acknowledged so that its sender stops
        resending it. An invalid one is not, so that the sender's next attempt
        can replace a copy damaged on the way. The shell calls this after
        every :meth:`receive`, also when it raised.
        """
        acks, self._acks = self._acks, []
        return acks

    @property
    def deadline_delay(self) -> float | None:
        """Seconds after this round's RoundStart at which the node forwards what it has.

        None before the first round.
        """
        if self.timeout is None:
            return None
        return self.timeout * self.config.deadline_share

    @property
    def awaited(self) -> frozenset[str]:
        """Upstream nodes from which a contribution can still arrive this round."""
        carries = self._carries()
        participants: frozenset[str] | None = self.participants
        blocked = blocked_providers(self.config.portion_routes, self.offline)
        if blocked:
            everyone = (
                frozenset().union(*carries.values()) if participants is None else participants
            )
            participants = everyone - blocked
        return awaited_senders(
            self.config.inputs,
            feeders=self.config.feeders,
            carries=carries,
            received=self._received.keys(),
            counted=self._counted(),
            offline=self.offline,
            participants=participants,
        )

    @property
    def acknowledged(self) -> bool:
        """Whether nodes downstream acknowledged everything this node forwarded this round."""
        return bool(self._outgoing) and self._acked_by.keys() == self._outgoing.keys()

    def deadline_reached(self, round: int) -> list[Action]:
        """Forward what the node has for ``round`` because its deadline passed.

        A node that has nothing yet forwards nothing now, and forwards the
        first input or own contribution that arrives later in the round.
        """
        if round != self.round or self.state is not NodeState.COLLECTING:
            return []
        self._past_deadline = True
        return self._forward_if_complete()

    def retry_due(self, round: int) -> list[Action]:
        """Return the resend of ``round``'s forwarded contribution while no Ack has come back.

        The resend goes to the first online node on the path, which may have
        changed since the last attempt. Returns nothing once the contribution
        is acknowledged or the round is over.
        """
        if round != self.round or self.state is not NodeState.FORWARDED:
            return []
        return [
            self._route(sent.message, reason="retry", portion=portion)
            for portion, sent in self._outgoing.items()
            if portion not in self._acked_by
        ]

    def own_contribution_ready(self, round: int, ciphertexts: Sequence[int]) -> list[Action]:
        """Accept this node's own encrypted contribution for ``round``."""
        if self.config.portion_paths:
            raise ProtocolError(
                f"node {self.config.node_id} splits its contribution into "
                f"{len(self.config.portion_paths)} portions; pass them to own_portions_ready"
            )
        self._check_own_allowed(round)
        self._check_ciphertexts(tuple(ciphertexts), sender=self.config.node_id, round=round)
        self._transition(NodeEvent.OWN_CONTRIBUTION)
        self._own = tuple(ciphertexts)
        return self._forward_if_complete()

    def own_portions_ready(self, round: int, portions: Sequence[Sequence[int]]) -> list[Action]:
        """Accept this node's own contribution for ``round``, split into one vector per portion.

        The portions must add up to the contribution under the learner's key;
        each goes to the first online aggregator on its own path. When one
        portion has no online aggregator left on its path, the node sends no
        portion this round, because the learner would otherwise receive a
        total that holds only part of this node's contribution.
        """
        expected = len(self.config.portion_paths)
        if expected == 0:
            raise ProtocolError(
                f"node {self.config.node_id} sends one contribution; pass it to own_contribution_ready"
            )
        if len(portions) != expected:
            raise ProtocolError(f"expected {expected} portions, got {len(portions)}", round=round)
        self._check_own_allowed(round)
        for portion in portions:
            self._check_ciphertexts(tuple(portion), sender=self.config.node_id, round=round)
        self._transition(NodeEvent.OWN_CONTRIBUTION)
        self._own_portions = tuple(tuple(portion) for portion in portions)
        return self._forward_if_complete()

    def _check_own_allowed(self, round: int) -> None:
        if round != self.round:
            raise StaleMessageError(
                f"own contribution for round {round} arrived after the node moved to round {self.round}"
            )
        if self.state is not NodeState.COLLECTING:
            raise StaleMessageError(
                f"own contribution for round {round} arrived after the node forwarded its sum",
                round=round,
            )
        if not self.config.is_provider:
            raise ProtocolError(
                f"node {self.config.node_id} holds no data but produced a contribution"
            )
        if not self._participates():
            raise ProtocolError(
                f"node {self.config.node_id} is not a participant of round {round}", round=round
            )
        if self._own is not None or self._own_portions is not None:
            raise DuplicateMessageError("own contribution computed twice", round=round)

    def _round_start(self, message: RoundStart) -> list[Action]:
        if message.run == self.run:
            if message.round < self.round:
                raise StaleMessageError("round already closed", round=message.round)
            if message.round == self.round:
                raise DuplicateMessageError("round already started", round=message.round)
        if self.state is NodeState.FINISHED:
            raise StaleMessageError("the job has finished here", round=message.round)
        ours = self.config.settings_digest
        if ours is not None and message.settings is not None and message.settings != ours:
            raise SettingsMismatchError(
                f"the learner's topology settings (digest {message.settings}) differ from this "
                f"node's (digest {ours}); run every node with the learner's topology file, "
                "because the [job], [crypto] and [model] tables and every node's next hops must match",
                round=message.round,
            )
        if len(message.theta) != self.config.parameters:
            raise ProtocolError(
                f"theta has {len(message.theta)} parameters, the topology says {self.config.parameters}",
                round=message.round,
            )
        try:
            key = PublicKey(n=message.public_key, hs=message.public_key_hs)
        except (TypeError, ValueError) as error:
            raise ProtocolError(f"invalid public key: {error}", round=message.round) from error
        if key.n.bit_length() != self.config.key_bits:
            raise ProtocolError(
                f"the learner's key has {key.n.bit_length()} bits, the topology says {self.config.key_bits}",
                round=message.round,
            )
        pinned = self.config.pinned_key
        if pinned is not None and key != pinned:
            raise ProtocolError(
                f"the round's public key {key.fingerprint} is not the learner's key {pinned.fingerprint} "
                "from the public key file; another client may be publishing as the learner",
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
        self._own_portions = None
        self.participants = (
            None if message.participants is None else frozenset(message.participants)
        )
        self.timeout = message.timeout
        self._past_deadline = False
        self._outgoing = {}
        self._acked_by = {}

        actions: list[Action] = []
        if self.config.is_provider and self._participates():
            actions.append(
                ComputeContribution(
                    round=message.round,
                    theta=message.theta,
                    public_key=message.public_key,
                    public_key_hs=message.public_key_hs,
                )
            )
        early = [
            c for (run, rnd, _), c in self._early.items() if run == self.run and rnd == self.round
        ]
        self._early = {
            k: c for k, c in self._early.items() if k[0] == self.run and k[1] > self.round
        }
        for contribution in early:
            # Early contributions could not be checked against the key before
            # now; one bad message must not cost the round its valid ones.
            try:
                actions.extend(self._contribution(contribution))
            except ProtocolError as error:
                actions.append(Dropped(error=error))
        return actions

    def _contribution(self, message: Contribution) -> list[Action]:
        carries = self._carries()
        if message.sender not in carries:
            raise ProtocolError(
                f"{message.sender!r} is not an input of node {self.config.node_id}, "
                "and its path to the learner does not pass through this node",
                sender=message.sender,
                round=message.round,
            )
        if message.run != self.run or message.round > self.round:
            return self._keep_early(message)
        if message.round < self.round:
            self._queue_ack(message)
            raise StaleMessageError(
                "round already closed", sender=message.sender, round=message.round
            )
        if message.sender in self._received:
            self._queue_ack(message)
            raise DuplicateMessageError(
                "contribution already counted", sender=message.sender, round=message.round
            )
        if self.state is not NodeState.COLLECTING:
            self._queue_ack(message)
            raise StaleMessageError(
                f"the node already forwarded its sum (state {self.state.value})",
                sender=message.sender,
                round=message.round,
            )

        assert self.public_key is not None
        try:
            check_contribution(
                message,
                receiver="this node",
                reachable=carries[message.sender],
                participants=self.participants,
                counted=self._counted(),
                sum_name="sum",
                public_key=self.public_key,
                ciphertext_count=self.config.ciphertext_count,
            )
        except DuplicateMessageError:
            # The sender must stop resending a sum whose providers are counted.
            self._queue_ack(message)
            raise

        self._transition(NodeEvent.CONTRIBUTION)
        self._received[message.sender] = message
        self._queue_ack(message)
        return self._forward_if_complete()

    def _queue_ack(self, message: Contribution) -> None:
        ack = Ack(
            job=self.config.job,
            run=message.run,
            round=message.round,
            sender=self.config.node_id,
            of=message.sender,
        )
        self._acks.append(SendAck(to=message.sender, message=ack))

    def _ack(self, message: Ack) -> list[Action]:
        if message.of != self.config.node_id:
            raise ProtocolError(
                f"Ack for {message.of!r} reached node {self.config.node_id}", sender=message.sender
            )
        if message.run != self.run or message.round != self.round:
            raise StaleMessageError(
                "Ack for another round", sender=message.sender, round=message.round
            )
        if self.state is not NodeState.FORWARDED or not self._outgoing:
            raise StaleMessageError(
                f"Ack while the node has nothing outstanding (state {self.state.value})",
                sender=message.sender,
                round=message.round,
            )
        portion = self._portion_through(message.sender)
        if portion is None or portion not in self._outgoing:
            raise ProtocolError(
                f"Ack from {message.sender!r}, which is not on this node's path to the learner",
                sender=message.sender,
                round=message.round,
            )
        if portion in self._acked_by:
            raise DuplicateMessageError(
                "Ack already received", sender=message.sender, round=message.round
            )
        self._transition(NodeEvent.ACK)
        self._acked_by[portion] = message.sender
        return []

    def _paths(self) -> tuple[tuple[str, ...], ...]:
        """Return the path of each portion; a node that does not split has one."""
        if self.config.portion_paths:
            return self.config.portion_paths
        return ((self.config.successor, *self.config.fallbacks),)

    def _portion_through(self, node: str) -> int | None:
        """Return the portion whose path contains ``node``, or None.

        The learner ends every path; it is the result only for a node that
        does not split its contribution, whose single portion is 0.
        """
        for portion, path in enumerate(self._paths()):
            if node in path:
                return portion
        return None

    def _status(self, message: Status) -> list[Action]:
        """Track which nodes are offline, and reroute or forward when that changes the round."""
        if message.node == self.config.node_id:
            return []
        if message.state is Liveness.OFFLINE:
            self.offline.add(message.node)
        else:
            self.offline.discard(message.node)
        if self.state is NodeState.COLLECTING:
            return self._forward_if_complete()
        if self.state is NodeState.FORWARDED and message.state is Liveness.OFFLINE:
            return [
                self._route(sent.message, reason="reroute", portion=portion)
                for portion, sent in list(self._outgoing.items())
                if portion not in self._acked_by and sent.to == message.node
            ]
        return []

    def _keep_early(self, message: Contribution) -> list[Action]:
        """Buffer a contribution that overtook its RoundStart on another topic."""
        key = (message.run, message.round, message.sender)
        if key in self._early:
            self._queue_ack(message)
            raise DuplicateMessageError(
                "early contribution already buffered", sender=message.sender
            )
        if len(self._early) >= self.MAX_EARLY:
            # It is not acknowledged, so the sender resends it, and by then the round may have started here.
            raise StaleMessageError(
                "too many contributions for rounds that have not started here",
                sender=message.sender,
                round=message.round,
            )
        self._early[key] = message
        self._queue_ack(message)
        return []

    def _job_done(self, message: JobDone) -> list[Action]:
        # A retained JobDone left by an earlier run must not stop a node that
        # is waiting for the next run to start.
        if self.run is None:
            raise StaleMessageError(
                "job done for a run this node never joined", round=message.round
            )
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

    def _carries(self) -> Mapping[str, frozenset[str]]:
        """Return every accepted sender mapped to the providers that can reach us through it."""
        if not self.config.rerouted_inputs:
            return self.config.inputs
        return {**self.config.rerouted_inputs, **self.config.inputs}

    def _participates(self) -> bool:
        return self.participants is None or self.config.node_id in self.participants

    def _check_ciphertexts(self, ciphertexts: tuple[int, ...], *, sender: str, round: int) -> None:
        assert self.public_key is not None
        check_ciphertexts(
            ciphertexts,
            public_key=self.public_key,
            expected=self.config.ciphertext_count,
            sender=sender,
            round=round,
        )

    def _forward_if_complete(self) -> list[Action]:
        """Forward the sum when nothing more can arrive, or when anything is there after the deadline."""
        if self.state is not NodeState.COLLECTING:
            return []
        own_ready = self._own is not None or self._own_portions is not None
        has_something = own_ready or bool(self._received)
        if self._past_deadline:
            return self._forward(reason="deadline") if has_something else []
        if self.config.is_provider and self._participates() and not own_ready:
            return []
        if self.awaited or not has_something:
            return []
        return self._forward(reason="complete")

    def _forward(self, *, reason: str) -> list[Action]:
        assert self.public_key is not None and self.run is not None
        if self._own_portions is not None:
            return self._forward_portions(reason=reason)
        total: tuple[int, ...] | None = self._own
        contributors = set(self._counted())
        if self._own is not None:
            contributors.add(self.config.node_id)
        for contribution in self._received.values():
            if total is None:
                total = contribution.ciphertexts
            else:
                total = tuple(
                    self.public_key.raw_add(a, b)
                    for a, b in zip(total, contribution.ciphertexts, strict=True)
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
        return [self._route(message, reason=reason)]

    def _forward_portions(self, *, reason: str) -> list[Action]:
        """Send each portion of this node's own contribution along its own path."""
        assert self._own_portions is not None and self.run is not None
        self._transition(NodeEvent.FORWARD)
        for portion, path in enumerate(self.config.portion_paths):
            # The learner ends the path but must never receive a portion straight
            # from this node, so only the aggregators before it count.
            if all(node in self.offline for node in path[:-1]):
                return [
                    Dropped(
                        error=ProtocolError(
                            f"every aggregator on the path of portion {portion} "
                            f"({', '.join(path[:-1])}) is offline, so node "
                            f"{self.config.node_id} sends no portion this round",
                            round=self.round,
                        )
                    )
                ]
        actions: list[Action] = []
        for portion, ciphertexts in enumerate(self._own_portions):
            message = Contribution(
                job=self.config.job,
                run=self.run,
                round=self.round,
                sender=self.config.node_id,
                contributors=(self.config.node_id,),
                ciphertexts=ciphertexts,
            )
            actions.append(self._route(message, reason=reason, portion=portion))
        return actions

    def _route(self, message: Contribution, *, reason: str, portion: int = 0) -> SendContribution:
        """Address ``message`` to the first online node on its path and remember it for resending.

        A portion of a split contribution never goes straight to the learner:
        when every aggregator on its path is offline it stays addressed to the
        last of them.
        """
        path = self._paths()[portion]
        if self.config.portion_paths:
            path = path[:-1]
        target, skipped = next_online(path, self.offline)
        action = SendContribution(to=target, message=message, reason=reason, skipped=skipped)
        self._outgoing[portion] = action
        return action
