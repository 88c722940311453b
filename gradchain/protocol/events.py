"""Actions the protocol state machines ask their IO shell to carry out.

The state machines in :mod:`.node` and :mod:`.learner` never touch a socket,
a clock or a thread. They take messages and return a list of these actions;
the daemon in :mod:`gradchain.node` performs them and feeds results back.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtocolError
from .messages import Ack, Contribution, JobDone, RoundStart


@dataclass(frozen=True, kw_only=True)
class SendContribution:
    """Publish ``message`` to the inbox of node ``to``.

    ``reason`` is why the node sends now: ``complete`` (every awaited input is
    in), ``deadline`` (the node's deadline passed, so the sum may be partial),
    ``retry`` (no Ack yet) or ``reroute`` (the node it was sent to went
    offline). ``skipped`` lists the offline nodes on the path before ``to``.
    """

    to: str
    message: Contribution
    reason: str = "complete"
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SendAck:
    """Publish ``message`` to the inbox of node ``to``, the sender of the acknowledged contribution."""

    to: str
    message: Ack


@dataclass(frozen=True, kw_only=True)
class PublishRound:
    """Publish ``message`` on the job's round topic for every node."""

    message: RoundStart | JobDone


@dataclass(frozen=True, kw_only=True)
class ComputeContribution:
    """Compute, randomise and encrypt this node's own contribution for ``round``.

    The shell runs the work off the event loop and passes the ciphertexts to
    ``NodeProtocol.own_contribution_ready``.
    """

    round: int
    theta: tuple[float, ...]
    public_key: int
    #: h_s of a Damgård–Jurik–Nielsen key, or None for a plain Paillier key.
    public_key_hs: int | None = None


@dataclass(frozen=True, kw_only=True)
class DecryptTotal:
    """Decrypt the total of ``round`` (learner only) and pass it to ``LearnerProtocol.total_decrypted``."""

    round: int
    ciphertexts: tuple[int, ...]
    contributors: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class RoundCompleted:
    """The learner updated θ after ``round``; the shell reports and evaluates it."""

    round: int
    iteration: int
    theta: tuple[float, ...]
    contributors: tuple[str, ...]
    step: float
    learning_rate: float
    #: The :attr:`gradchain.randomisers.Recovered.scale_total` of the round's totals.
    scale_total: float | None = None
    #: Providers sampled for the round; None means every provider.
    participants: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class RoundFailed:
    """The learner gave up on ``round`` and will repeat it; ``reason`` says why."""

    round: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class Finished:
    """The job is over; the shell disconnects and exits."""

    reason: str
    succeeded: bool = True


@dataclass(frozen=True, kw_only=True)
class Dropped:
    """A message was rejected while handling another event; the shell logs ``error``."""

    error: ProtocolError


Action = (
    SendContribution
    | SendAck
    | PublishRound
    | ComputeContribution
    | DecryptTotal
    | RoundCompleted
    | RoundFailed
    | Finished
    | Dropped
)
