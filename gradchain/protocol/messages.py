"""Messages exchanged by gradchain nodes.

Every message is a frozen, keyword-only dataclass that validates its fields
when it is built, so a message that exists is well formed. Whether it fits the
current round is the state machines' business (see :mod:`.node` and
:mod:`.learner`).

Only public values travel: the model parameters θ, the learner's public key,
ids, round numbers and Paillier ciphertexts. A provider's gradient and the
random numbers of its randomiser only ever leave it inside a ciphertext.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

from ..errors import ProtocolError

ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
RUN_PATTERN = re.compile(r"[0-9a-f]{8,64}")
SETTINGS_PATTERN = re.compile(r"[0-9a-f]{16}")

#: Maximum number of parameters a message may carry.
MAX_PARAMETERS = 10_000_000


def _check_id(value: object, field: str) -> None:
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise ProtocolError(
            f"invalid {field} {_shorten(value)}: expected 1 to 64 characters from [A-Za-z0-9_.-]"
        )


def _check_run(value: object) -> None:
    if not isinstance(value, str) or RUN_PATTERN.fullmatch(value) is None:
        raise ProtocolError(
            f"invalid run id {_shorten(value)}: expected 8 to 64 lowercase hex digits"
        )


def _check_round(value: object) -> None:
    # bool is a subclass of int; True is not a round number.
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ProtocolError(f"invalid round {_shorten(value)}: expected an integer >= 1")


def _check_theta(value: object) -> None:
    if not isinstance(value, tuple) or not value:
        raise ProtocolError("invalid theta: expected a non-empty sequence of floats")
    if len(value) > MAX_PARAMETERS:
        raise ProtocolError(f"invalid theta: {len(value)} parameters, at most {MAX_PARAMETERS}")
    for index, item in enumerate(value):
        if not isinstance(item, float) or not math.isfinite(item):
            raise ProtocolError(f"invalid theta[{index}]: expected a finite float")


def _check_id_list(value: object, field: str) -> None:
    if not isinstance(value, tuple) or not value:
        raise ProtocolError(f"invalid {field}: expected a non-empty list of node ids")
    for item in value:
        _check_id(item, field[:-1] if field.endswith("s") else field)
    if len(set(value)) != len(value):
        raise ProtocolError(f"invalid {field}: {sorted(value)} names a node twice")


def _shorten(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, kw_only=True)
class RoundStart:
    """The learner opens round ``round`` of run ``run`` with parameters θ.

    ``public_key`` is the learner's Paillier modulus n; every contribution of
    the round is encrypted under it. ``timeout`` is how many seconds the
    learner waits for the round's totals before it repeats the round.
    ``participants`` lists the providers sampled to contribute this round;
    None means every provider of the topology. ``public_key_hs`` is the DJN
    obfuscator base h_s = h^n mod n² of a DJN key, or None for a plain
    Paillier key. ``settings`` is the digest of the learner's topology
    settings (see :attr:`gradchain.topology.Topology.settings_digest`), which
    a node compares with its own so that a node started with another
    topology file rejects the round with a clear error; None skips the check.
    """

    job: str
    run: str
    round: int
    theta: tuple[float, ...]
    public_key: int
    timeout: float
    participants: tuple[str, ...] | None = None
    public_key_hs: int | None = None
    settings: str | None = None

    def __post_init__(self) -> None:
        _check_id(self.job, "job id")
        _check_run(self.run)
        _check_round(self.round)
        _check_theta(self.theta)
        if self.settings is not None and (
            not isinstance(self.settings, str) or SETTINGS_PATTERN.fullmatch(self.settings) is None
        ):
            raise ProtocolError(
                f"invalid settings digest {_shorten(self.settings)}: expected 16 lowercase hex digits"
            )
        if not isinstance(self.public_key, int) or self.public_key < 15 or self.public_key % 2 == 0:
            raise ProtocolError("invalid public_key: expected an odd Paillier modulus n")
        if not isinstance(self.timeout, float) or not (0 < self.timeout < math.inf):
            raise ProtocolError(f"invalid timeout {_shorten(self.timeout)}: expected seconds > 0")
        if self.participants is not None:
            _check_id_list(self.participants, "participants")
        hs = self.public_key_hs
        if hs is not None and (
            not isinstance(hs, int) or isinstance(hs, bool) or not 1 < hs < self.public_key**2 - 1
        ):
            raise ProtocolError("invalid public_key_hs: expected an integer with 1 < h_s < n² - 1")

    def __str__(self) -> str:
        return (
            f"RoundStart(job={self.job}, run={self.run[:8]}, round={self.round}, "
            f"{len(self.theta)} parameters)"
        )


@dataclass(frozen=True, kw_only=True)
class Contribution:
    """An encrypted partial sum that ``sender`` forwards to its next hop.

    ``contributors`` lists the providers whose randomised gradients the sum
    contains, each exactly once. ``ciphertexts`` is the encrypted sum of their
    payloads as the job's randomiser lays them out (E(Σ a_i·g_i) followed by
    E(Σ a_i) for the default scalar one), in the encoding the job configures.
    """

    job: str
    run: str
    round: int
    sender: str
    contributors: tuple[str, ...]
    ciphertexts: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_id(self.job, "job id")
        _check_run(self.run)
        _check_round(self.round)
        _check_id(self.sender, "sender")
        if not isinstance(self.contributors, tuple) or not self.contributors:
            raise ProtocolError("invalid contributors: expected a non-empty list of node ids")
        for contributor in self.contributors:
            _check_id(contributor, "contributor")
        if len(set(self.contributors)) != len(self.contributors):
            raise ProtocolError(
                f"invalid contributors: {sorted(self.contributors)} names a provider twice",
                sender=self.sender,
                round=self.round,
            )
        if not isinstance(self.ciphertexts, tuple) or not self.ciphertexts:
            raise ProtocolError("invalid ciphertexts: expected a non-empty list")
        for index, item in enumerate(self.ciphertexts):
            if not isinstance(item, int) or isinstance(item, bool) or item <= 0:
                raise ProtocolError(f"invalid ciphertexts[{index}]: expected a positive integer")

    def __str__(self) -> str:
        return (
            f"Contribution(job={self.job}, run={self.run[:8]}, round={self.round}, "
            f"sender={self.sender}, contributors={len(self.contributors)}, "
            f"{len(self.ciphertexts)} ciphertexts)"
        )


@dataclass(frozen=True, kw_only=True)
class JobDone:
    """The learner has finished run ``run`` after ``round`` rounds."""

    job: str
    run: str
    round: int
    theta: tuple[float, ...]
    reason: str

    def __post_init__(self) -> None:
        _check_id(self.job, "job id")
        _check_run(self.run)
        if not isinstance(self.round, int) or isinstance(self.round, bool) or self.round < 0:
            raise ProtocolError(f"invalid round {_shorten(self.round)}: expected an integer >= 0")
        _check_theta(self.theta)
        if not isinstance(self.reason, str) or len(self.reason) > 200:
            raise ProtocolError("invalid reason: expected a string of at most 200 characters")

    def __str__(self) -> str:
        return f"JobDone(job={self.job}, run={self.run[:8]}, round={self.round}, {self.reason})"


@dataclass(frozen=True, kw_only=True)
class Ack:
    """Node ``sender`` received the contribution that ``of`` sent for ``round`` of run ``run``.

    The receiver sends an Ack for every contribution it counted, had already
    counted, or no longer needs because the round has moved on, so that ``of``
    stops resending it. An Ack does not promise that the contribution is in
    the round's total.
    """

    job: str
    run: str
    round: int
    sender: str
    of: str

    def __post_init__(self) -> None:
        _check_id(self.job, "job id")
        _check_run(self.run)
        _check_round(self.round)
        _check_id(self.sender, "sender")
        _check_id(self.of, "acknowledged sender")

    def __str__(self) -> str:
        return f"Ack(job={self.job}, run={self.run[:8]}, round={self.round}, {self.sender} has {self.of})"


class Liveness(str, Enum):
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, kw_only=True)
class Status:
    """Liveness of one node, published retained; the broker's last will sets offline."""

    job: str
    node: str
    state: Liveness
    instance: str

    def __post_init__(self) -> None:
        _check_id(self.job, "job id")
        _check_id(self.node, "node id")
        if not isinstance(self.state, Liveness):
            raise ProtocolError(f"invalid state {_shorten(self.state)}: expected online or offline")
        _check_run(self.instance)


Message = RoundStart | Contribution | Ack | JobDone | Status
