"""Tests for gradchain.protocol.signing: signed payloads and their verification."""

from __future__ import annotations

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gradchain.errors import ProtocolError, SignatureError
from gradchain.protocol import (
    Ack,
    Contribution,
    JobDone,
    Liveness,
    Message,
    RoundStart,
    Status,
    encode,
)
from gradchain.protocol.flags import FlagCount, encode_flag_count
from gradchain.protocol.signing import (
    SIGNED_WIRE_VERSION,
    MessageSigning,
    decode_unverified,
    sign_payload,
    unsigned,
    unwrap,
)

RUN = "0123456789abcdef"
IDS = ("learner", "p1", "p2", "p3")
KEYS = {participant: Ed25519PrivateKey.generate() for participant in IDS}


def signing(own_id: str, *, required: bool = True) -> MessageSigning:
    return MessageSigning(
        own_id=own_id,
        learner_id="learner",
        private_key=KEYS[own_id],
        public_keys={participant: key.public_key() for participant, key in KEYS.items()},
        required=required,
    )


def contribution(sender: str = "p2") -> Contribution:
    return Contribution(
        job="job",
        run=RUN,
        round=3,
        sender=sender,
        contributors=("p1", sender),
        ciphertexts=(12345, 67890),
    )


MESSAGES: list[tuple[str, Message]] = [
    ("p2", contribution()),
    ("p3", Ack(job="job", run=RUN, round=3, sender="p3", of="p2")),
    ("p1", Status(job="job", node="p1", state=Liveness.OFFLINE, instance=RUN)),
    (
        "learner",
        RoundStart(job="job", run=RUN, round=3, theta=(0.5, -1.0), public_key=3233, timeout=10.0),
    ),
    ("learner", JobDone(job="job", run=RUN, round=3, theta=(0.5, -1.0), reason="done")),
]


@pytest.mark.parametrize(("author", "message"), MESSAGES, ids=lambda value: type(value).__name__)
def test_signed_message_round_trips(author: str, message: Message) -> None:
    payload = signing(author).sign(encode(message))

    assert signing("p3").open(payload) == message


def test_signed_flag_count_round_trips() -> None:
    count = FlagCount(job="job", run=RUN, node="p1", flagged=4)
    payload = signing("p1").sign(encode_flag_count(count))

    assert signing("learner").open_flag_count(payload) == count


def test_envelope_carries_body_bytes() -> None:
    body = encode(contribution())
    payload = signing("p2").sign(body)

    envelope = unwrap(payload)

    assert envelope is not None
    signer, carried, signature = envelope
    assert signer == "p2"
    assert carried == body
    assert len(signature) == 64


def test_tampered_body_rejected() -> None:
    body = encode(contribution())
    signer, _, signature = unwrap(sign_payload(body, "p2", KEYS["p2"])) or ("", b"", b"")
    altered = encode(
        Contribution(
            job="job",
            run=RUN,
            round=3,
            sender="p2",
            contributors=("p1", "p2"),
            ciphertexts=(12345, 67891),
        )
    )
    forged = msgpack.packb(
        {"v": SIGNED_WIRE_VERSION, "signer": signer, "body": altered, "sig": signature},
        use_bin_type=True,
    )

    with pytest.raises(SignatureError, match="invalid signature of 'p2'"):
        signing("p3").open(forged)


def test_flipped_signature_bit_rejected() -> None:
    payload = bytearray(signing("p2").sign(encode(contribution())))
    payload[-1] ^= 0x01

    with pytest.raises(SignatureError, match="invalid signature"):
        signing("p3").open(bytes(payload))


def test_wrong_key_for_signer_rejected() -> None:
    # p1 signs with its own key but names p2 as the signer.
    forged = sign_payload(encode(contribution("p2")), "p2", KEYS["p1"])

    with pytest.raises(SignatureError, match="invalid signature of 'p2'"):
        signing("p3").open(forged)


def test_signer_author_mismatch_rejected() -> None:
    # p1 signs correctly as itself, but the contribution claims to be from p2.
    forged = signing("p1").sign(encode(contribution("p2")))

    with pytest.raises(SignatureError) as caught:
        signing("p3").open(forged)

    assert "Contribution of 'p2' signed by 'p1'" in str(caught.value)
    assert caught.value.sender == "p1"
    assert caught.value.round == 3


def test_node_cannot_sign_round_start() -> None:
    _, round_start = MESSAGES[3]
    forged = signing("p1").sign(encode(round_start))

    with pytest.raises(SignatureError, match="RoundStart of 'learner' signed by 'p1'"):
        signing("p2").open(forged)


def test_flag_count_of_other_node_rejected() -> None:
    forged = signing("p1").sign(
        encode_flag_count(FlagCount(job="job", run=RUN, node="p2", flagged=0))
    )

    with pytest.raises(SignatureError, match="FlagCount of 'p2' signed by 'p1'"):
        signing("learner").open_flag_count(forged)


def test_unknown_signer_rejected() -> None:
    stranger = Ed25519PrivateKey.generate()
    forged = sign_payload(encode(contribution("p9")), "p9", stranger)

    with pytest.raises(SignatureError, match="no signing public key is known"):
        signing("p3").open(forged)


def test_unsigned_rejected_when_required() -> None:
    with pytest.raises(SignatureError, match="requires signed messages"):
        signing("p3", required=True).open(encode(contribution()))


def test_unsigned_flag_count_rejected_when_required() -> None:
    payload = encode_flag_count(FlagCount(job="job", run=RUN, node="p1", flagged=0))

    with pytest.raises(SignatureError, match="requires signed messages"):
        signing("learner", required=True).open_flag_count(payload)


def test_unsigned_accepted_when_optional() -> None:
    message = contribution()

    assert signing("p3", required=False).open(encode(message)) == message


def test_bad_signature_rejected_when_optional() -> None:
    forged = sign_payload(encode(contribution("p2")), "p2", KEYS["p1"])

    with pytest.raises(SignatureError, match="invalid signature"):
        signing("p3", required=False).open(forged)


def test_unsigned_setup_neither_signs_nor_trusts_signatures() -> None:
    plain = unsigned("p3", "learner")
    body = encode(contribution())

    assert plain.sign(body) == body
    assert plain.open(body) == contribution()
    with pytest.raises(SignatureError, match=r"this topology has no \[signing\] table"):
        plain.open(signing("p2").sign(body))


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        pytest.param({"v": 4}, "unsupported wire format version 4", id="version-4"),
        pytest.param(
            {"v": 2, "signer": "p2", "body": b"x", "sig": b"s" * 64, "extra": 1},
            "invalid signed payload: expected the fields",
            id="extra-field",
        ),
        pytest.param(
            {"v": 2, "signer": "p2", "body": b"x", "sig": b"s" * 63},
            "expected a signature of 64 bytes",
            id="short-signature",
        ),
        pytest.param(
            {"v": 2, "signer": 5, "body": b"x", "sig": b"s" * 64},
            "expected a string signer",
            id="signer-not-string",
        ),
        pytest.param(
            {"v": 2, "signer": "p2", "body": "text", "sig": b"s" * 64},
            "a byte body",
            id="body-not-bytes",
        ),
    ],
)
def test_malformed_envelope_rejected(envelope: dict[str, object], message: str) -> None:
    payload = msgpack.packb(envelope, use_bin_type=True)

    with pytest.raises(ProtocolError, match=message):
        signing("p3").open(payload)


def test_decode_unverified_reads_both_versions() -> None:
    message = contribution()
    body = encode(message)

    assert decode_unverified(body) == message
    assert decode_unverified(sign_payload(body, "p2", KEYS["p1"])) == message
