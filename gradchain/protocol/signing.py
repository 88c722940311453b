"""End-to-end Ed25519 signatures on wire payloads, without IO.

A signed payload is a msgpack map of wire format version 2 that wraps the
version 1 payload of :mod:`.wire` (or of :mod:`.flags`) as bytes::

    {"v": 2, "signer": "p2", "body": <bytes of the v1 map>, "sig": <64 bytes>}

``sig`` is the Ed25519 signature of ``SIGNATURE_CONTEXT + signer + b"\\0" +
body``, so a signature made for one signer id never verifies for another.
The receiver verifies ``body`` exactly as received and only then parses it,
so no re-encoding can change what was signed.

:class:`MessageSigning` seals outgoing payloads with the own key and opens
incoming ones. With an :class:`~.sealing.InboxSealing` it also encrypts
Contributions and Acks to their recipient before signing them, and decrypts
the ones it receives after verifying them (see :mod:`.sealing`).

Opening raises :class:`~gradchain.errors.SignatureError` in four cases:
the signer has no known public key, the signature is invalid, the signer is
not the message's author, or the payload is unsigned while
signatures are required. The author is ``sender`` of a Contribution or Ack,
``node`` of a Status or FlagCount, and the learner for RoundStart and JobDone.

Signatures stop forged and altered messages. They do not stop a replay of a
message its author really sent. The round state machines drop a replayed
Contribution or Ack of the current run as a duplicate or stale one.
NOTE: a replayed Status of the same node instance is accepted, and so is a
replayed RoundStart of an earlier run with the same job id and learner key,
which moves the nodes to that run. Nothing in the envelope binds a payload
to a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import ProtocolError, SealingError, SignatureError
from .flags import FlagCount, decode_flag_count
from .messages import Ack, Contribution, JobDone, Message, RoundStart, Status
from .sealing import (
    SEALED_WIRE_VERSION,
    InboxSealing,
    SealedEnvelope,
    check_sealed_message,
    parse_sealed,
)
from .wire import MAX_MESSAGE_BYTES, WIRE_VERSION, decode

SIGNED_WIRE_VERSION = 2
SIGNATURE_BYTES = 64
SIGNATURE_CONTEXT = b"gradchain signed payload v2\0"

_ENVELOPE_FIELDS = frozenset({"v", "signer", "body", "sig"})


def signed_bytes(signer: str, body: bytes) -> bytes:
    """Return the bytes that the signature of ``body`` by ``signer`` covers."""
    return SIGNATURE_CONTEXT + signer.encode("utf-8") + b"\0" + body


def sign_payload(body: bytes, signer: str, key: Ed25519PrivateKey) -> bytes:
    """Wrap the version 1 payload ``body`` in a signed version 2 envelope."""
    envelope = {
        "v": SIGNED_WIRE_VERSION,
        "signer": signer,
        "body": body,
        "sig": key.sign(signed_bytes(signer, body)),
    }
    packed: bytes = msgpack.packb(envelope, use_bin_type=True)
    return packed


def unwrap(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[str, bytes, bytes] | None:
    """Split a signed envelope into signer, body and signature, or return None for an unsigned one.

    An unsigned payload is a version 1 message or a version 3 sealed envelope.

    Checks the envelope's shape only, not the signature. Raises
    ProtocolError when ``data`` is neither a version 1 payload nor a well
    formed version 2 envelope.
    """
    if not isinstance(data, bytes | bytearray):
        raise ProtocolError(f"invalid payload: expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise ProtocolError(f"payload of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        outer: Any = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (msgpack.UnpackException, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"invalid msgpack payload: {exc}") from exc
    if not isinstance(outer, dict):
        raise ProtocolError(f"invalid payload: expected a map, got {type(outer).__name__}")
    version = outer.get("v")
    if type(version) is int and version in (WIRE_VERSION, SEALED_WIRE_VERSION):
        return None
    if type(version) is not int or version != SIGNED_WIRE_VERSION:
        raise ProtocolError(
            f"unsupported wire format version {version!r}: expected {WIRE_VERSION}, "
            f"{SIGNED_WIRE_VERSION} (signed) or {SEALED_WIRE_VERSION} (sealed)"
        )
    if set(outer) != _ENVELOPE_FIELDS:
        raise ProtocolError(
            f"invalid signed payload: expected the fields {sorted(_ENVELOPE_FIELDS)}, "
            f"got {sorted(outer)}"
        )
    signer, body, signature = outer["signer"], outer["body"], outer["sig"]
    if not isinstance(signer, str) or not isinstance(body, bytes):
        raise ProtocolError("invalid signed payload: expected a string signer and a byte body")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise ProtocolError(
            f"invalid signed payload: expected a signature of {SIGNATURE_BYTES} bytes"
        )
    return signer, body, signature


def decode_unverified(data: bytes) -> Message:
    """Parse a v1 payload, or the body of a signed one WITHOUT checking its signature.

    Only for observers that count or inspect traffic (the traffic counter,
    fault injection, the start-up check for a running node id). Daemons that
    act on a message use :meth:`MessageSigning.open` instead.
    """
    envelope = unwrap(data)
    return decode(data if envelope is None else envelope[1])


def peek(data: bytes) -> Message | SealedEnvelope:
    """Parse a payload like :func:`decode_unverified`, but return a sealed one's envelope.

    A sealed payload's message stays encrypted, so observers read only the
    envelope's ``kind``, ``round``, sender and recipient.
    """
    envelope = unwrap(data)
    body = data if envelope is None else envelope[1]
    sealed = parse_sealed(body)
    return decode(body) if sealed is None else sealed


def author_of(message: Message | FlagCount, learner_id: str) -> str:
    """Return the id of the participant that must have signed ``message``."""
    if isinstance(message, Contribution | Ack):
        return message.sender
    if isinstance(message, Status | FlagCount):
        return message.node
    if isinstance(message, RoundStart | JobDone):
        return learner_id
    raise TypeError(f"no author known for {type(message).__name__}")


@dataclass(frozen=True)
class MessageSigning:
    """The own signing key and the known public keys of one node or learner.

    ``private_key`` None sends unsigned payloads. ``required`` False accepts
    unsigned payloads, but a signed payload must still verify. A
    MessageSigning with no keys and ``required`` False, as :func:`unsigned`
    returns, is the behaviour of a topology without a ``[signing]`` table.
    ``sealing`` None sends and accepts Contributions and Acks unsealed.
    """

    own_id: str
    learner_id: str
    private_key: Ed25519PrivateKey | None = None
    public_keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    required: bool = False
    sealing: InboxSealing | None = None

    @property
    def signs(self) -> bool:
        """Whether outgoing payloads are signed."""
        return self.private_key is not None

    def sign(self, body: bytes) -> bytes:
        """Sign the version 1 payload ``body`` with the own key, or return it as is without a key."""
        if self.private_key is None:
            return body
        return sign_payload(body, self.own_id, self.private_key)

    def seal_for(self, recipient: str, message: Contribution | Ack, body: bytes) -> bytes:
        """Seal the version 1 payload ``body`` of ``message`` to ``recipient``, then sign it."""
        if self.sealing is not None:
            body = self.sealing.seal(body, recipient, message)
        return self.sign(body)

    def open(self, data: bytes) -> Message:
        """Verify, unseal and parse one round, inbox or status payload.

        Raises SignatureError or SealingError, both ProtocolErrors, when a
        check fails, and ProtocolError for a malformed payload.
        """
        signer, body = self._verified_body(data)
        sealed = parse_sealed(body)
        if sealed is None:
            message = decode(body)
            self._check_author(signer, message)
            sealing_required = self.sealing is not None and self.sealing.required
            if isinstance(message, Contribution | Ack) and sealing_required:
                raise SealingError(
                    f"rejected an unsealed {type(message).__name__}: this topology seals "
                    "inbox messages ([signing] seal = true)",
                    sender=message.sender,
                    round=message.round,
                )
        else:
            if signer is not None and signer != sealed.sender:
                raise SealingError(
                    f"rejected a payload sealed by {sealed.sender[:64]!r} but signed by {signer!r}",
                    sender=signer,
                    round=sealed.round,
                )
            if self.sealing is None:
                raise SealingError(
                    "rejected a sealed payload: this participant has no sealing keys; use the "
                    "same topology file as the sender",
                    sender=sealed.sender[:64],
                    round=sealed.round,
                )
            message = decode(self.sealing.open(sealed))
            self._check_author(signer, message)
            check_sealed_message(sealed, message)
            return message
        self._check_author(signer, message)
        return message

    def open_flag_count(self, data: bytes) -> FlagCount:
        """Verify and parse one FlagCount payload.

        Raises SignatureError, a ProtocolError, when a check fails, and
        ProtocolError for a malformed payload.
        """
        signer, body = self._verified_body(data)
        message = decode_flag_count(body)
        self._check_author(signer, message)
        return message

    def _verified_body(self, data: bytes) -> tuple[str | None, bytes]:
        envelope = unwrap(data)
        if envelope is None:
            if self.required:
                raise SignatureError(
                    "rejected an unsigned payload: this topology requires signed messages "
                    "([signing] required = true)"
                )
            return None, bytes(data)
        signer, body, signature = envelope
        key = self.public_keys.get(signer)
        if key is None and not self.public_keys:
            raise SignatureError(
                f"rejected a payload signed by {signer[:64]!r}: this topology has no [signing] "
                "table, so no signing public keys are loaded; use the same topology file as "
                "the sender",
                sender=signer[:64],
            )
        if key is None:
            raise SignatureError(
                f"rejected a payload signed by {signer[:64]!r}: no signing public key is known "
                "for that id",
                sender=signer[:64],
            )
        try:
            key.verify(signature, signed_bytes(signer, body))
        except InvalidSignature:
            raise SignatureError(
                f"rejected a payload with an invalid signature of {signer!r}", sender=signer
            ) from None
        return signer, body

    def _check_author(self, signer: str | None, message: Message | FlagCount) -> None:
        if signer is None:
            return
        author = author_of(message, self.learner_id)
        if signer != author:
            raise SignatureError(
                f"rejected a {type(message).__name__} of {author!r} signed by {signer!r}: "
                "only the author may sign a message",
                sender=signer,
                round=getattr(message, "round", None),
            )


def unsigned(own_id: str, learner_id: str) -> MessageSigning:
    """Return the MessageSigning of a topology without a ``[signing]`` table."""
    return MessageSigning(own_id=own_id, learner_id=learner_id)
