"""Sealed inbox payloads: hybrid public-key encryption of Contributions and Acks, without IO.

Every participant of a signed topology has a static X25519 key pair (see
:mod:`gradchain.crypto.signkeys`). A sender seals the version 1 payload of a
Contribution or Ack to the public key of the inbox's owner. A broker client
that reads ``gradchain/<job>/inbox/<id>`` can then read neither the
ciphertexts nor the contributor list, even with the learner's Paillier
private key. A sealed payload is a msgpack map of wire format version 3::

    {"v": 3, "from": "p1", "to": "p2", "kind": "contribution", "round": 4,
     "epk": <32 bytes>, "ct": <ChaCha20-Poly1305 ciphertext and tag>}

The sender draws a fresh ephemeral X25519 key ``epk`` for each payload, so
each payload has its own key and the nonce can be constant. The key is
``HKDF-SHA256(X25519(ephemeral, recipient), salt=epk + recipient public
key, info=SEAL_CONTEXT)``. The associated data covers the job, the
recipient id, the sender id, ``kind`` and ``round``. The receiver builds it
from its own job and own id, so a payload copied into another inbox or
another job fails to decrypt.

``kind`` and ``round`` stay readable because the fault injector and the
traffic counter need them. They reveal little that the payload size and
the timing relative to the public RoundStart do not already reveal.

Order: the sender seals first and then signs the sealed envelope (the
``{"v": 2}`` envelope of :mod:`.signing`). The signature thus covers the
recipient, so the recipient cannot forward a payload it unsealed, sealed
again, to a third participant under the original sender's name: it cannot
sign as that sender. Signing the plaintext and sealing the result would
hide the signature, but a signature over the plaintext does not name the
recipient, which leaves exactly that forwarding open. The signer id shown
on the wire is the ``from`` field, which the topology makes public anyway.
A receiver verifies the signature before it spends an X25519 operation.

NOTE: sealing hides a payload from everyone except its recipient, and the
recipient reads it. A learner that colludes with the first node's successor
therefore still decrypts the first node's contribution, which contains that
node alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import ProtocolError, SealingError
from .messages import Ack, Contribution, Message
from .wire import MAX_MESSAGE_BYTES

SEALED_WIRE_VERSION = 3
SEAL_CONTEXT = b"gradchain sealed payload v3\0"
PUBLIC_KEY_BYTES = 32

#: The ``kind`` field of a sealed payload for each message type that travels sealed.
SEALED_KINDS: Mapping[type, str] = {Contribution: "contribution", Ack: "ack"}

_ENVELOPE_FIELDS = frozenset({"v", "from", "to", "kind", "round", "epk", "ct"})
# A fresh key encrypts exactly one payload, so a constant nonce is never reused with a key.
_NONCE = bytes(12)


@dataclass(frozen=True)
class SealedEnvelope:
    """The readable fields and the ciphertext of one sealed payload."""

    sender: str
    recipient: str
    kind: str
    round: int
    ephemeral_key: bytes
    ciphertext: bytes


def parse_sealed(data: bytes) -> SealedEnvelope | None:
    """Parse a sealed envelope without opening it, or return None for a payload of another version.

    Raises ProtocolError when ``data`` claims version 3 but is malformed.
    """
    outer = _unpack_map(data)
    version = outer.get("v")
    if type(version) is not int or version != SEALED_WIRE_VERSION:
        return None
    if set(outer) != _ENVELOPE_FIELDS:
        raise SealingError(
            f"invalid sealed payload: expected the fields {sorted(_ENVELOPE_FIELDS)}, "
            f"got {sorted(map(str, outer))}"
        )
    sender, recipient, kind, round = outer["from"], outer["to"], outer["kind"], outer["round"]
    ephemeral_key, ciphertext = outer["epk"], outer["ct"]
    if not (isinstance(sender, str) and isinstance(recipient, str) and isinstance(kind, str)):
        raise SealingError("invalid sealed payload: expected string from, to and kind fields")
    if kind not in SEALED_KINDS.values():
        raise SealingError(f"invalid sealed payload: unknown kind {kind[:32]!r}")
    if type(round) is not int or round < 0:
        raise SealingError(f"invalid sealed payload: expected a round number, got {round!r}")
    if not isinstance(ephemeral_key, bytes) or len(ephemeral_key) != PUBLIC_KEY_BYTES:
        raise SealingError(
            f"invalid sealed payload: expected an ephemeral key of {PUBLIC_KEY_BYTES} bytes"
        )
    if not isinstance(ciphertext, bytes):
        raise SealingError("invalid sealed payload: expected a byte ciphertext")
    return SealedEnvelope(sender, recipient, kind, round, ephemeral_key, ciphertext)


def associated_data(job: str, recipient: str, sender: str, kind: str, round: int) -> bytes:
    """Return the associated data that binds a sealed payload to its job, inbox, sender and round.

    ``kind`` is bound too, so an observer's view of the payload is authentic.
    """
    packed: bytes = msgpack.packb([job, recipient, sender, kind, round], use_bin_type=True)
    return SEAL_CONTEXT + packed


def seal_payload(
    body: bytes,
    *,
    job: str,
    sender: str,
    recipient: str,
    recipient_key: X25519PublicKey,
    message: Contribution | Ack,
) -> bytes:
    """Encrypt the version 1 payload ``body`` of ``message`` to ``recipient_key``."""
    kind = SEALED_KINDS[type(message)]
    ephemeral = X25519PrivateKey.generate()
    ephemeral_key = _raw(ephemeral.public_key())
    key = _derive_key(ephemeral.exchange(recipient_key), ephemeral_key, _raw(recipient_key))
    ciphertext = ChaCha20Poly1305(key).encrypt(
        _NONCE, body, associated_data(job, recipient, sender, kind, message.round)
    )
    envelope = {
        "v": SEALED_WIRE_VERSION,
        "from": sender,
        "to": recipient,
        "kind": kind,
        "round": message.round,
        "epk": ephemeral_key,
        "ct": ciphertext,
    }
    packed: bytes = msgpack.packb(envelope, use_bin_type=True)
    return packed


def unseal_payload(
    envelope: SealedEnvelope, *, job: str, own_id: str, private_key: X25519PrivateKey
) -> bytes:
    """Decrypt a sealed payload addressed to ``own_id`` and return the version 1 payload inside.

    Raises SealingError when the payload names another recipient or does not
    decrypt: sealed to another key, for another job, inbox, sender, kind or
    round, or altered on the way.
    """
    if envelope.recipient != own_id:
        raise SealingError(
            f"rejected a payload sealed to {envelope.recipient[:64]!r}: this is the inbox of "
            f"{own_id!r}",
            sender=envelope.sender[:64],
            round=envelope.round,
        )
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(envelope.ephemeral_key))
    except ValueError:
        # X25519 rejects an ephemeral key of low order, whose shared secret is all zeros.
        raise SealingError(
            "rejected a sealed payload with an invalid ephemeral key",
            sender=envelope.sender[:64],
            round=envelope.round,
        ) from None
    key = _derive_key(shared, envelope.ephemeral_key, _raw(private_key.public_key()))
    aad = associated_data(job, own_id, envelope.sender, envelope.kind, envelope.round)
    try:
        return ChaCha20Poly1305(key).decrypt(_NONCE, envelope.ciphertext, aad)
    except InvalidTag:
        raise SealingError(
            f"rejected a sealed payload that does not decrypt for {own_id!r}: it was sealed "
            "to another key, for another job, sender or round, or altered on the way",
            sender=envelope.sender[:64],
            round=envelope.round,
        ) from None


def check_sealed_message(envelope: SealedEnvelope, message: Message) -> None:
    """Raise SealingError unless ``message`` matches the readable fields of its sealed envelope."""
    kind = SEALED_KINDS.get(type(message))
    author = getattr(message, "sender", None)
    round = getattr(message, "round", None)
    if kind != envelope.kind or round != envelope.round or author != envelope.sender:
        raise SealingError(
            f"rejected a sealed {type(message).__name__} whose envelope claims a {envelope.kind} "
            f"of {envelope.sender!r} for round {envelope.round}",
            sender=envelope.sender,
            round=envelope.round,
        )


@dataclass(frozen=True)
class InboxSealing:
    """The own X25519 key and the known recipients' public keys of one node or learner.

    ``required`` rejects a Contribution or Ack that arrives unsealed.
    A recipient without a known public key gets unsealed payloads, which
    :func:`gradchain.node.signatures.load_message_signing` allows only when
    ``required`` is false.
    """

    job: str
    own_id: str
    private_key: X25519PrivateKey | None = None
    public_keys: Mapping[str, X25519PublicKey] = field(default_factory=dict)
    required: bool = True

    def seal(self, body: bytes, recipient: str, message: Contribution | Ack) -> bytes:
        """Seal ``body`` to ``recipient``, or return it as is when no key is known for it."""
        key = self.public_keys.get(recipient)
        if key is None:
            return body
        return seal_payload(
            body,
            job=self.job,
            sender=self.own_id,
            recipient=recipient,
            recipient_key=key,
            message=message,
        )

    def open(self, envelope: SealedEnvelope) -> bytes:
        """Unseal a payload addressed to this participant.

        Raises SealingError when this participant has no sealing private key or
        the payload does not unseal.
        """
        if self.private_key is None:
            raise SealingError(
                f"rejected a sealed payload: {self.own_id!r} has no sealing private key; run "
                "`gradchain keys TOPOLOGY` and copy its .seal.key file",
                sender=envelope.sender[:64],
                round=envelope.round,
            )
        return unseal_payload(
            envelope, job=self.job, own_id=self.own_id, private_key=self.private_key
        )


def _unpack_map(data: bytes) -> dict[Any, Any]:
    if not isinstance(data, bytes | bytearray):
        raise ProtocolError(f"invalid payload: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            f"payload of {len(data)} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes"
        )
    try:
        outer: Any = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (msgpack.UnpackException, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"invalid msgpack payload: {exc}") from exc
    if not isinstance(outer, dict):
        raise ProtocolError(f"invalid payload: expected a map, got {type(outer).__name__}")
    return outer


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _derive_key(shared: bytes, ephemeral_key: bytes, recipient_key: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=ephemeral_key + recipient_key, info=SEAL_CONTEXT
    ).derive(shared)
