"""Tests for gradchain.protocol.sealing: inbox payloads encrypted to their recipient."""

from __future__ import annotations

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gradchain.errors import ProtocolError, SealingError, SignatureError
from gradchain.protocol import Ack, Contribution, Liveness, RoundStart, Status, encode
from gradchain.protocol.sealing import (
    SEALED_WIRE_VERSION,
    InboxSealing,
    SealedEnvelope,
    parse_sealed,
    seal_payload,
)
from gradchain.protocol.signing import MessageSigning, decode_unverified, peek, unwrap

RUN = "0123456789abcdef"
IDS = ("learner", "p1", "p2", "p3")
SIGNING_KEYS = {participant: Ed25519PrivateKey.generate() for participant in IDS}
SEALING_KEYS = {participant: X25519PrivateKey.generate() for participant in IDS}


def participant(own_id: str, *, job: str = "job", required: bool = True) -> MessageSigning:
    return MessageSigning(
        own_id=own_id,
        learner_id="learner",
        private_key=SIGNING_KEYS[own_id],
        public_keys={name: key.public_key() for name, key in SIGNING_KEYS.items()},
        required=required,
        sealing=InboxSealing(
            job=job,
            own_id=own_id,
            private_key=SEALING_KEYS[own_id],
            public_keys={name: key.public_key() for name, key in SEALING_KEYS.items()},
            required=required,
        ),
    )


def contribution(sender: str = "p1", round: int = 3) -> Contribution:
    return Contribution(
        job="job",
        run=RUN,
        round=round,
        sender=sender,
        contributors=(sender,),
        ciphertexts=(123456789, 987654321),
    )


def sealed_for(recipient: str, message: Contribution | Ack, sender: str = "p1") -> bytes:
    return participant(sender).seal_for(recipient, message, encode(message))


def sealed_body(payload: bytes) -> bytes:
    envelope = unwrap(payload)
    assert envelope is not None
    return envelope[1]


def test_contribution_round_trips() -> None:
    message = contribution()

    assert participant("p2").open(sealed_for("p2", message)) == message


def test_ack_round_trips() -> None:
    message = Ack(job="job", run=RUN, round=3, sender="p2", of="p1")

    assert participant("p1").open(sealed_for("p1", message, sender="p2")) == message


def test_sealed_payload_hides_message() -> None:
    message = contribution()
    payload = sealed_for("p2", message)

    body = sealed_body(payload)
    envelope = parse_sealed(body)
    assert envelope is not None
    assert (envelope.sender, envelope.recipient, envelope.kind, envelope.round) == (
        "p1",
        "p2",
        "contribution",
        3,
    )
    assert (123456789).to_bytes(4, "big") not in payload
    assert encode(message) not in payload
    assert "type" not in msgpack.unpackb(body)
    with pytest.raises(ProtocolError, match="version 3"):
        decode_unverified(payload)
    assert isinstance(peek(payload), SealedEnvelope)


def test_fresh_ephemeral_key_per_payload() -> None:
    first = parse_sealed(sealed_body(sealed_for("p2", contribution())))
    second = parse_sealed(sealed_body(sealed_for("p2", contribution())))

    assert first is not None
    assert second is not None
    assert first.ephemeral_key != second.ephemeral_key
    assert first.ciphertext != second.ciphertext


def test_wrong_recipient_rejected() -> None:
    payload = sealed_for("p3", contribution())

    with pytest.raises(SealingError, match="sealed to 'p3'"):
        participant("p2").open(payload)


def test_readdressed_payload_fails_to_decrypt() -> None:
    # An unsigned payload sealed to p3 whose "to" field is rewritten to p2:
    # p2 has the wrong X25519 key, and the associated data names p3.
    message = contribution()
    body = seal_payload(
        encode(message),
        job="job",
        sender="p1",
        recipient="p3",
        recipient_key=SEALING_KEYS["p3"].public_key(),
        message=message,
    )
    fields = msgpack.unpackb(body)
    fields["to"] = "p2"
    readdressed = msgpack.packb(fields, use_bin_type=True)

    with pytest.raises(SealingError, match="does not decrypt"):
        participant("p2", required=False).open(readdressed)


def test_replay_to_another_inbox_rejected() -> None:
    original = sealed_for("p2", contribution())

    with pytest.raises(SealingError, match="sealed to 'p2'"):
        participant("p3").open(original)


def test_forwarding_under_sender_name_rejected() -> None:
    # p2 unseals p1's contribution and seals it again for p3 under p1's name,
    # but it can sign the new envelope only as p2.
    inner = participant("p2").open(sealed_for("p2", contribution()))
    assert isinstance(inner, Contribution)
    resealed = seal_payload(
        encode(inner),
        job="job",
        sender="p1",
        recipient="p3",
        recipient_key=SEALING_KEYS["p3"].public_key(),
        message=inner,
    )

    with pytest.raises(SealingError, match="sealed by 'p1' but signed by 'p2'"):
        participant("p3").open(participant("p2").sign(resealed))


def test_forwarding_under_own_name_rejected() -> None:
    inner = participant("p2").open(sealed_for("p2", contribution()))
    assert isinstance(inner, Contribution)
    forwarded = participant("p2").seal_for("p3", inner, encode(inner))

    with pytest.raises(SignatureError, match="Contribution of 'p1' signed by 'p2'"):
        participant("p3").open(forwarded)


def test_payload_for_another_job_rejected() -> None:
    payload = sealed_for("p2", contribution())

    with pytest.raises(SealingError, match="does not decrypt"):
        participant("p2", job="other").open(payload)


def test_tampered_ciphertext_rejected() -> None:
    message = contribution()
    body = seal_payload(
        encode(message),
        job="job",
        sender="p1",
        recipient="p2",
        recipient_key=SEALING_KEYS["p2"].public_key(),
        message=message,
    )
    fields = msgpack.unpackb(body)
    ciphertext = bytearray(fields["ct"])
    ciphertext[10] ^= 0x01
    fields["ct"] = bytes(ciphertext)
    tampered = msgpack.packb(fields, use_bin_type=True)

    with pytest.raises(SealingError, match="does not decrypt"):
        participant("p2", required=False).open(tampered)


@pytest.mark.parametrize(("field", "value"), [("round", 4), ("kind", "ack"), ("from", "p3")])
def test_altered_readable_field_rejected(field: str, value: object) -> None:
    message = contribution()
    body = seal_payload(
        encode(message),
        job="job",
        sender="p1",
        recipient="p2",
        recipient_key=SEALING_KEYS["p2"].public_key(),
        message=message,
    )
    fields = msgpack.unpackb(body)
    fields[field] = value

    with pytest.raises(SealingError, match="does not decrypt"):
        participant("p2", required=False).open(msgpack.packb(fields, use_bin_type=True))


def test_envelope_must_match_message() -> None:
    # The sender itself writes an envelope that claims round 9 for a round 3 message.
    message = contribution()
    lying = contribution(round=9)
    body = seal_payload(
        encode(message),
        job="job",
        sender="p1",
        recipient="p2",
        recipient_key=SEALING_KEYS["p2"].public_key(),
        message=lying,
    )

    with pytest.raises(SealingError, match="claims a contribution of 'p1' for round 9"):
        participant("p2").open(participant("p1").sign(body))


def test_unsealed_contribution_rejected_when_required() -> None:
    unsealed = participant("p1").sign(encode(contribution()))

    with pytest.raises(SealingError, match="unsealed Contribution"):
        participant("p2").open(unsealed)
    assert participant("p2", required=False).open(unsealed) == contribution()


def test_unsealed_ack_rejected_when_required() -> None:
    unsealed = participant("p2").sign(
        encode(Ack(job="job", run=RUN, round=3, sender="p2", of="p1"))
    )

    with pytest.raises(SealingError, match="unsealed Ack"):
        participant("p1").open(unsealed)


def test_broadcast_messages_stay_unsealed() -> None:
    round_start = RoundStart(
        job="job", run=RUN, round=3, theta=(0.5,), public_key=3233, timeout=10.0
    )
    status = Status(job="job", node="p1", state=Liveness.ONLINE, instance=RUN)

    assert participant("p1").open(participant("learner").sign(encode(round_start))) == round_start
    assert participant("p2").open(participant("p1").sign(encode(status))) == status


def test_unsigned_sealed_payload_rejected_when_signing_required() -> None:
    message = contribution()
    sealing = participant("p1").sealing
    assert sealing is not None
    body = sealing.seal(encode(message), "p2", message)

    with pytest.raises(SignatureError, match="unsigned"):
        participant("p2").open(body)


def test_sealed_payload_rejected_without_sealing_keys() -> None:
    payload = sealed_for("p2", contribution())
    p2 = participant("p2")
    without_sealing = MessageSigning(
        own_id="p2",
        learner_id="learner",
        private_key=p2.private_key,
        public_keys=p2.public_keys,
        required=True,
    )

    with pytest.raises(SealingError, match="no sealing keys"):
        without_sealing.open(payload)


def test_malformed_envelope_rejected() -> None:
    fields = {"v": SEALED_WIRE_VERSION, "from": "p1", "to": "p2", "kind": "contribution"}

    with pytest.raises(SealingError, match="expected the fields"):
        participant("p2", required=False).open(msgpack.packb(fields, use_bin_type=True))


def test_unknown_recipient_key_sends_unsealed() -> None:
    sealing = InboxSealing(job="job", own_id="p1", public_keys={})
    body = encode(contribution())

    assert sealing.seal(body, "p2", contribution()) == body
