"""Checks that a node and the learner apply to every contribution they receive."""

from __future__ import annotations

from collections.abc import Sequence, Set

from ..crypto import PublicKey
from ..errors import DuplicateMessageError, ProtocolError
from .messages import Contribution


def check_ciphertexts(
    ciphertexts: Sequence[int], *, public_key: PublicKey, expected: int, sender: str, round: int
) -> None:
    """Raise ProtocolError unless there are ``expected`` ciphertexts, each in Z*_{n²}."""
    if len(ciphertexts) != expected:
        raise ProtocolError(
            f"expected {expected} ciphertexts, got {len(ciphertexts)}", sender=sender, round=round
        )
    index = public_key.first_invalid_ciphertext(ciphertexts)
    if index is not None:
        raise ProtocolError(
            f"ciphertext {index} is not in Z*_(n^2) for the learner's key",
            sender=sender,
            round=round,
        )


def check_contribution(
    message: Contribution,
    *,
    receiver: str,
    reachable: Set[str],
    participants: Set[str] | None,
    counted: Set[str],
    sum_name: str,
    public_key: PublicKey,
    ciphertext_count: int,
) -> None:
    """Check a contribution's contributors and ciphertexts before it joins a sum.

    ``reachable`` contains the providers that can reach ``receiver`` through
    the sender, ``participants`` the providers sampled for the round (None for
    all) and ``counted`` the providers already in the receiver's sum, which
    messages call ``sum_name``. Raises
    DuplicateMessageError when a contributor is already counted, and
    ProtocolError for every other failure.
    """
    sender, round = message.sender, message.round
    unknown = sorted(set(message.contributors) - reachable)
    if unknown:
        raise ProtocolError(
            f"contributors {unknown} cannot reach {receiver} through {sender!r}",
            sender=sender,
            round=round,
        )
    if participants is not None:
        outsiders = sorted(set(message.contributors) - participants)
        if outsiders:
            raise ProtocolError(
                f"contributors {outsiders} are not participants of this round",
                sender=sender,
                round=round,
            )
    overlap = sorted(set(message.contributors) & counted)
    if overlap:
        raise DuplicateMessageError(
            f"contributors {overlap} are already in this round's {sum_name}",
            sender=sender,
            round=round,
        )
    check_ciphertexts(
        message.ciphertexts,
        public_key=public_key,
        expected=ciphertext_count,
        sender=sender,
        round=round,
    )
