"""Tests for gradchain.protocol.wire."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import msgpack  # type: ignore[import-untyped]
import pytest

from gradchain.errors import ProtocolError
from gradchain.protocol.messages import Contribution, JobDone, Liveness, Message, RoundStart, Status
from gradchain.protocol.wire import MAX_CIPHERTEXT_BYTES, WIRE_VERSION, decode, encode

if TYPE_CHECKING:
    from tests.protocol.conftest import Paillier

RUN = "0123456789abcdef"

# Payloads built by hand use this odd 63-bit number as the modulus.
MODULUS = 0x6A09E667F3BCC909 | 1
CIPHERTEXT_WIDTH = 16


def pack(body: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def ciphertext_bytes(value: int) -> bytes:
    return value.to_bytes(CIPHERTEXT_WIDTH, "big")


def wire_body(kind: str) -> dict[str, Any]:
    """Build a valid payload body of message type ``kind`` by hand, without :func:`encode`."""
    common = {"v": WIRE_VERSION, "type": kind, "job": "job-1"}
    if kind == "round_start":
        return {
            **common,
            "run": RUN,
            "round": 2,
            "theta": [0.5, -1.25],
            "public_key": MODULUS.to_bytes(8, "big"),
            "timeout": 30.0,
        }
    if kind == "contribution":
        return {
            **common,
            "run": RUN,
            "round": 2,
            "sender": "p2",
            "contributors": ["p1", "p2"],
            "ciphertexts": [ciphertext_bytes(7), ciphertext_bytes(2**100 + 1)],
        }
    if kind == "job_done":
        return {**common, "run": RUN, "round": 9, "theta": [0.5, -1.25], "reason": "converged"}
    if kind == "status":
        return {**common, "node": "p1", "state": "online", "instance": RUN}
    raise AssertionError(f"unknown message type {kind}")


KINDS = ["round_start", "contribution", "job_done", "status"]


# Round trips


def sample_messages(paillier: Paillier) -> list[Message]:
    ciphertexts = paillier.encrypt([0.5, -2.0, 1.0])
    return [
        RoundStart(
            job="job-1",
            run=RUN,
            round=1,
            theta=(0.0, -1.5e-7, 3.25e12),
            public_key=paillier.public_key.n,
            timeout=120.0,
        ),
        Contribution(
            job="job-1",
            run=RUN,
            round=4,
            sender="agg.1",
            contributors=("p1", "p2", "p3"),
            ciphertexts=ciphertexts,
        ),
        # A ciphertext with leading zero bytes must come back with the same value.
        Contribution(
            job="job-1", run=RUN, round=4, sender="p1", contributors=("p1",), ciphertexts=(1, 2)
        ),
        JobDone(job="job-1", run=RUN, round=0, theta=(1.0, -0.0), reason="failed: no providers"),
        Status(job="job-1", node="p1", state=Liveness.ONLINE, instance=RUN),
        Status(job="job-1", node="p1", state=Liveness.OFFLINE, instance=RUN),
    ]


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(0, id="round-start"),
        pytest.param(1, id="contribution"),
        pytest.param(2, id="contribution-small-ciphertexts"),
        pytest.param(3, id="job-done"),
        pytest.param(4, id="status-online"),
        pytest.param(5, id="status-offline"),
    ],
)
def test_round_trip_returns_equal_message(paillier: Paillier, index: int) -> None:
    message = sample_messages(paillier)[index]

    decoded = decode(encode(message, ciphertext_bytes=paillier.public_key.ciphertext_bytes))

    assert decoded == message
    assert type(decoded) is type(message)


def test_round_trip_keeps_ciphertexts_decryptable(paillier: Paillier) -> None:
    values = [0.5, -2.0, 1.0]
    message = Contribution(
        job="job-1",
        run=RUN,
        round=1,
        sender="p1",
        contributors=("p1",),
        ciphertexts=paillier.encrypt(values),
    )

    decoded = decode(encode(message, ciphertext_bytes=paillier.public_key.ciphertext_bytes))

    assert isinstance(decoded, Contribution)
    assert paillier.decrypt(decoded.ciphertexts, contributors=1).tolist() == values


def test_bytearray_payload_decodes() -> None:
    # decode() accepts bytearray at run time, although it is annotated to take bytes.
    decoded = decode(bytearray(pack(wire_body("status"))))  # type: ignore[arg-type]

    assert decoded == Status(job="job-1", node="p1", state=Liveness.ONLINE, instance=RUN)


def test_hand_built_payload_decodes_to_expected_values() -> None:
    decoded = decode(pack(wire_body("contribution")))

    assert decoded == Contribution(
        job="job-1",
        run=RUN,
        round=2,
        sender="p2",
        contributors=("p1", "p2"),
        ciphertexts=(7, 2**100 + 1),
    )


def test_integer_numbers_decode_as_floats() -> None:
    body = wire_body("round_start")
    body["theta"] = [1, -2]
    body["timeout"] = 30

    decoded = decode(pack(body))

    assert isinstance(decoded, RoundStart)
    assert decoded.theta == (1.0, -2.0)
    assert all(type(value) is float for value in decoded.theta)
    assert decoded.timeout == 30.0
    assert type(decoded.timeout) is float


# Encoding


def test_encode_pads_every_ciphertext_to_fixed_width(paillier: Paillier) -> None:
    width = paillier.public_key.ciphertext_bytes
    message = Contribution(
        job="job-1",
        run=RUN,
        round=1,
        sender="p1",
        contributors=("p1",),
        ciphertexts=(1, 2**64, paillier.public_key.nsquare - 1),
    )

    body = msgpack.unpackb(encode(message, ciphertext_bytes=width))

    assert [len(item) for item in body["ciphertexts"]] == [width, width, width]


def test_encode_without_width_uses_longest_ciphertext() -> None:
    message = Contribution(
        job="job-1", run=RUN, round=1, sender="p1", contributors=("p1",), ciphertexts=(1, 2**64)
    )

    body = msgpack.unpackb(encode(message))

    assert [len(item) for item in body["ciphertexts"]] == [9, 9]


def test_encode_writes_version_and_type() -> None:
    message = Status(job="job-1", node="p1", state=Liveness.OFFLINE, instance=RUN)

    body = msgpack.unpackb(encode(message))

    assert body["v"] == WIRE_VERSION
    assert body["type"] == "status"
    assert body["state"] == "offline"


@pytest.mark.parametrize(
    "ciphertext_offset",
    [
        pytest.param(0, id="exactly-n-squared"),
        pytest.param(2**40, id="above-n-squared"),
    ],
)
def test_encode_rejects_ciphertext_longer_than_width(
    paillier: Paillier, ciphertext_offset: int
) -> None:
    width = paillier.public_key.ciphertext_bytes
    too_long = 1 << (8 * width)
    message = Contribution(
        job="job-1",
        run=RUN,
        round=3,
        sender="p1",
        contributors=("p1",),
        ciphertexts=(5, too_long + ciphertext_offset),
    )

    with pytest.raises(ProtocolError, match=f"does not fit in {width} bytes") as caught:
        encode(message, ciphertext_bytes=width)

    assert caught.value.sender == "p1"
    assert caught.value.round == 3


def test_encode_rejects_object_that_is_not_message() -> None:
    with pytest.raises(TypeError, match="cannot encode dict"):
        encode({"type": "status"})  # type: ignore[arg-type]


# Hostile input: every failure is a ProtocolError


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\x82\xa1v\x01", id="truncated-map"),
        pytest.param(pack({"v": 1}) + b"\x00", id="trailing-bytes"),
        pytest.param(b"\x81\xa1v\xa1\xff", id="invalid-utf8-string"),
        pytest.param(b"\x81\x01\x01", id="int-map-key"),
        pytest.param(b"\x91" * 5000, id="nested-too-deep"),
        pytest.param(b"\xdd\xff\xff\xff\xff", id="declared-huge-array"),
        pytest.param(b"\xd5\xff\x00\x00", id="invalid-timestamp-extension"),
    ],
)
def test_decode_rejects_invalid_msgpack(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match="invalid msgpack payload"):
        decode(payload)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("{}", id="str"),
        pytest.param(None, id="none"),
        pytest.param([1, 2], id="list"),
    ],
)
def test_decode_rejects_payload_that_is_not_bytes(payload: object) -> None:
    with pytest.raises(ProtocolError, match="expected bytes"):
        decode(payload)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([1, 2], id="array"),
        pytest.param(5, id="int"),
        pytest.param("round_start", id="str"),
        pytest.param(None, id="nil"),
        pytest.param(b"\x01", id="bin"),
        pytest.param(msgpack.ExtType(5, b"x"), id="extension"),
    ],
)
def test_decode_rejects_payload_that_is_not_map(body: object) -> None:
    payload = msgpack.packb(body, use_bin_type=True)

    with pytest.raises(ProtocolError, match="expected a map"):
        decode(payload)


@pytest.mark.parametrize(
    "version",
    [
        pytest.param(2, id="two"),
        pytest.param(0, id="zero"),
        pytest.param("1", id="str"),
        pytest.param(None, id="nil"),
        pytest.param([1], id="array"),
        # msgpack keeps booleans and floats apart from integers, so these are not version 1.
        pytest.param(True, id="bool-true"),
        pytest.param(1.0, id="float"),
    ],
)
def test_decode_rejects_wrong_version(version: object) -> None:
    body = wire_body("status")
    body["v"] = version

    with pytest.raises(ProtocolError, match="unsupported wire format version"):
        decode(pack(body))


def test_decode_rejects_missing_version() -> None:
    body = wire_body("status")
    del body["v"]

    with pytest.raises(ProtocolError, match="unsupported wire format version None"):
        decode(pack(body))


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("hello", id="unknown-name"),
        pytest.param("Round_Start", id="wrong-case"),
        pytest.param(5, id="int"),
        pytest.param(None, id="nil"),
        pytest.param(["status"], id="array"),
        pytest.param({"status": 1}, id="map"),
    ],
)
def test_decode_rejects_unknown_type(kind: object) -> None:
    body = wire_body("status")
    body["type"] = kind

    with pytest.raises(ProtocolError, match="unknown message type"):
        decode(pack(body))


def test_decode_rejects_missing_type() -> None:
    body = wire_body("status")
    del body["type"]

    with pytest.raises(ProtocolError, match="unknown message type None"):
        decode(pack(body))


MISSING_FIELDS = [
    pytest.param(kind, field, id=f"{kind}-{field}")
    for kind in KINDS
    for field in wire_body(kind)
    if field not in ("v", "type")
]


@pytest.mark.parametrize(("kind", "field"), MISSING_FIELDS)
def test_decode_rejects_missing_field(kind: str, field: str) -> None:
    body = wire_body(kind)
    del body[field]

    with pytest.raises(ProtocolError, match=rf"missing fields \['{field}'\], unknown fields \[\]"):
        decode(pack(body))


@pytest.mark.parametrize("kind", KINDS)
def test_decode_rejects_extra_field(kind: str) -> None:
    body = wire_body(kind)
    body["extra"] = 1

    with pytest.raises(ProtocolError, match=r"missing fields \[\], unknown fields \['extra'\]"):
        decode(pack(body))


def test_decode_rejects_field_of_another_type() -> None:
    body = wire_body("status")
    body["sender"] = "p1"

    with pytest.raises(ProtocolError, match=r"unknown fields \['sender'\]"):
        decode(pack(body))


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        pytest.param("round_start", "job", 5, id="round-start-job-int"),
        pytest.param("round_start", "run", b"0123abcd", id="round-start-run-bin"),
        pytest.param("round_start", "round", "2", id="round-start-round-str"),
        pytest.param("round_start", "round", 2.0, id="round-start-round-float"),
        pytest.param("round_start", "round", True, id="round-start-round-bool"),
        pytest.param("round_start", "round", None, id="round-start-round-nil"),
        pytest.param("round_start", "theta", "0.5", id="round-start-theta-str"),
        pytest.param("round_start", "theta", ["0.5"], id="round-start-theta-list-of-str"),
        pytest.param("round_start", "theta", [True], id="round-start-theta-list-of-bool"),
        pytest.param("round_start", "theta", [[0.5]], id="round-start-theta-nested"),
        pytest.param("round_start", "public_key", MODULUS, id="round-start-public-key-int"),
        pytest.param("round_start", "public_key", str(MODULUS), id="round-start-public-key-str"),
        pytest.param("round_start", "timeout", "30", id="round-start-timeout-str"),
        pytest.param("round_start", "timeout", True, id="round-start-timeout-bool"),
        pytest.param("contribution", "round", "2", id="contribution-round-str"),
        pytest.param("contribution", "sender", 2, id="contribution-sender-int"),
        pytest.param("contribution", "contributors", "p1", id="contribution-contributors-str"),
        pytest.param("contribution", "contributors", [1, 2], id="contribution-contributors-ints"),
        pytest.param("contribution", "ciphertexts", [7, 9], id="contribution-ciphertexts-ints"),
        pytest.param(
            "contribution", "ciphertexts", b"\x07" * 16, id="contribution-ciphertexts-bin"
        ),
        pytest.param(
            "contribution", "ciphertexts", ["07" * 16], id="contribution-ciphertexts-list-of-str"
        ),
        pytest.param(
            "contribution",
            "ciphertexts",
            [ciphertext_bytes(7), 9],
            id="contribution-ciphertexts-bin-then-int",
        ),
        pytest.param("job_done", "round", "9", id="job-done-round-str"),
        pytest.param("job_done", "theta", None, id="job-done-theta-nil"),
        pytest.param("job_done", "reason", 5, id="job-done-reason-int"),
        pytest.param("status", "node", 1, id="status-node-int"),
        pytest.param("status", "state", 1, id="status-state-int"),
        pytest.param("status", "instance", None, id="status-instance-nil"),
    ],
)
def test_decode_rejects_wrong_field_type(kind: str, field: str, value: object) -> None:
    body = wire_body(kind)
    body[field] = value

    with pytest.raises(ProtocolError, match=f"invalid field '{field}'"):
        decode(pack(body))


@pytest.mark.parametrize(
    ("kind", "field", "value", "expected_error"),
    [
        pytest.param("round_start", "round", 0, "invalid round", id="round-zero"),
        pytest.param("round_start", "theta", [], "invalid theta", id="theta-empty"),
        pytest.param("round_start", "theta", [0.5, math.nan], "invalid theta", id="theta-nan"),
        pytest.param("round_start", "theta", [math.inf], "invalid theta", id="theta-infinity"),
        pytest.param("round_start", "timeout", -1.0, "invalid timeout", id="timeout-negative"),
        pytest.param("round_start", "public_key", b"", "invalid public_key", id="public-key-empty"),
        pytest.param(
            "round_start",
            "public_key",
            b"\x00" * 7 + b"\x10",
            "invalid public_key",
            id="public-key-even",
        ),
        pytest.param(
            "round_start",
            "public_key",
            b"\x01" * (MAX_CIPHERTEXT_BYTES + 1),
            "is too long",
            id="public-key-too-long",
        ),
        pytest.param("round_start", "job", "a/b", "invalid job id", id="job-with-slash"),
        pytest.param("round_start", "run", "XYZ", "invalid run id", id="run-not-hex"),
        pytest.param(
            "contribution",
            "contributors",
            ["p1", "p1"],
            "names a provider twice",
            id="contributors-duplicate",
        ),
        pytest.param(
            "contribution", "contributors", [], "invalid contributors", id="contributors-empty"
        ),
        pytest.param(
            "contribution", "ciphertexts", [], "the list is empty", id="ciphertexts-empty"
        ),
        pytest.param(
            "contribution",
            "ciphertexts",
            [ciphertext_bytes(7), ciphertext_bytes(9)[1:]],
            "one fixed length",
            id="ciphertexts-unequal-lengths",
        ),
        pytest.param(
            "contribution",
            "ciphertexts",
            [ciphertext_bytes(7)[1:], ciphertext_bytes(9)],
            "one fixed length",
            id="ciphertexts-first-shorter",
        ),
        pytest.param(
            "contribution",
            "ciphertexts",
            [b"", b""],
            "one fixed length",
            id="ciphertexts-zero-width",
        ),
        pytest.param(
            "contribution",
            "ciphertexts",
            [b"\x01" * (MAX_CIPHERTEXT_BYTES + 1)],
            "one fixed length",
            id="ciphertext-too-long",
        ),
        pytest.param(
            "contribution",
            "ciphertexts",
            [ciphertext_bytes(7), bytes(CIPHERTEXT_WIDTH)],
            r"invalid ciphertexts\[1\]",
            id="ciphertext-zero",
        ),
        pytest.param("job_done", "round", -1, "invalid round", id="job-done-round-negative"),
        pytest.param(
            "job_done", "reason", "x" * 201, "invalid reason", id="job-done-reason-too-long"
        ),
        pytest.param(
            "status", "state", "sleeping", "is not online or offline", id="status-state-unknown"
        ),
    ],
)
def test_decode_rejects_invalid_value(
    kind: str, field: str, value: object, expected_error: str
) -> None:
    body = wire_body(kind)
    body[field] = value

    with pytest.raises(ProtocolError, match=expected_error):
        decode(pack(body))


def test_decode_accepts_ciphertext_of_maximum_width() -> None:
    body = wire_body("contribution")
    body["ciphertexts"] = [b"\x01" * MAX_CIPHERTEXT_BYTES]

    decoded = decode(pack(body))

    assert isinstance(decoded, Contribution)
    assert decoded.ciphertexts == (int.from_bytes(b"\x01" * MAX_CIPHERTEXT_BYTES, "big"),)


def test_decode_rejects_payload_over_max_bytes() -> None:
    payload = pack(wire_body("contribution"))

    with pytest.raises(ProtocolError, match=f"payload of {len(payload)} bytes exceeds the limit"):
        decode(payload, max_bytes=len(payload) - 1)


def test_decode_accepts_payload_of_exactly_max_bytes() -> None:
    payload = pack(wire_body("contribution"))

    decoded = decode(payload, max_bytes=len(payload))

    assert isinstance(decoded, Contribution)


# The DJN obfuscator base in RoundStart

HS = MODULUS**2 // 3


def test_round_trip_keeps_djn_hs(paillier: Paillier) -> None:
    message = RoundStart(
        job="job-1",
        run=RUN,
        round=1,
        theta=(0.5,),
        public_key=paillier.public_key.n,
        timeout=10.0,
        public_key_hs=paillier.public_key.n + 2,
    )

    decoded = decode(encode(message))

    assert decoded == message


def test_encode_leaves_out_hs_of_plain_key() -> None:
    message = RoundStart(
        job="job-1", run=RUN, round=1, theta=(0.5,), public_key=MODULUS, timeout=10.0
    )

    body = msgpack.unpackb(encode(message), raw=False)

    assert "public_key_hs" not in body


def test_encode_writes_hs_as_big_endian_bytes() -> None:
    message = RoundStart(
        job="job-1",
        run=RUN,
        round=1,
        theta=(0.5,),
        public_key=MODULUS,
        timeout=10.0,
        public_key_hs=HS,
    )

    body = msgpack.unpackb(encode(message), raw=False)

    assert body["public_key_hs"] == HS.to_bytes((HS.bit_length() + 7) // 8, "big")


def test_hand_built_round_start_with_hs_decodes() -> None:
    body = wire_body("round_start")
    body["public_key_hs"] = HS.to_bytes(16, "big")

    message = decode(pack(body))

    assert isinstance(message, RoundStart)
    assert message.public_key_hs == HS


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(5, "invalid field 'public_key_hs': expected bytes", id="int"),
        pytest.param("ab", "invalid field 'public_key_hs': expected bytes", id="string"),
        pytest.param(None, "invalid field 'public_key_hs': expected bytes", id="nil"),
        pytest.param(b"\x01", "invalid public_key_hs", id="one"),
        pytest.param(b"", "invalid public_key_hs", id="empty"),
        pytest.param(
            b"\x01" * (MAX_CIPHERTEXT_BYTES + 1), "bytes is too long", id="longer-than-limit"
        ),
        pytest.param((MODULUS**2).to_bytes(16, "big"), "invalid public_key_hs", id="n-squared"),
    ],
)
def test_decode_rejects_invalid_hs(value: object, message: str) -> None:
    body = wire_body("round_start")
    body["public_key_hs"] = value

    with pytest.raises(ProtocolError, match=message):
        decode(pack(body))


def test_hs_is_optional_only_for_round_start() -> None:
    body = wire_body("job_done")
    body["public_key_hs"] = HS.to_bytes(16, "big")

    with pytest.raises(ProtocolError, match=r"unknown fields \['public_key_hs'\]"):
        decode(pack(body))


def test_round_start_settings_digest_round_trips() -> None:
    body = {**wire_body("round_start"), "settings": "0123456789abcdef"}

    message = decode(msgpack.packb(body, use_bin_type=True))

    assert isinstance(message, RoundStart)
    assert message.settings == "0123456789abcdef"
    assert decode(encode(message)) == message


@pytest.mark.parametrize("digest", ["0123", "0123456789ABCDEF", 17])
def test_decode_rejects_malformed_settings_digest(digest: object) -> None:
    body = {**wire_body("round_start"), "settings": digest}

    with pytest.raises(ProtocolError, match="settings"):
        decode(msgpack.packb(body, use_bin_type=True))
