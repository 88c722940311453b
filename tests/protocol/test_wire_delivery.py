"""Wire format of Ack messages and of the participants of a RoundStart."""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from gradchain.errors import ProtocolError
from gradchain.protocol.messages import Ack, RoundStart
from gradchain.protocol.wire import WIRE_VERSION, decode, encode

RUN = "0123456789abcdef"
MODULUS = 0x6A09E667F3BCC909 | 1


def pack(body: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def ack_body() -> dict[str, Any]:
    return {
        "v": WIRE_VERSION,
        "type": "ack",
        "job": "job-1",
        "run": RUN,
        "round": 3,
        "sender": "p4",
        "of": "p3",
    }


def round_start_body(**changes: Any) -> dict[str, Any]:
    body = {
        "v": WIRE_VERSION,
        "type": "round_start",
        "job": "job-1",
        "run": RUN,
        "round": 2,
        "theta": [0.5],
        "public_key": MODULUS.to_bytes(8, "big"),
        "timeout": 30.0,
    }
    return body | changes


def test_ack_round_trip() -> None:
    message = Ack(job="job-1", run=RUN, round=3, sender="p4", of="p3")

    assert decode(encode(message)) == message


def test_hand_built_ack_decodes() -> None:
    assert decode(pack(ack_body())) == Ack(job="job-1", run=RUN, round=3, sender="p4", of="p3")


@pytest.mark.parametrize("field", ["job", "run", "round", "sender", "of"])
def test_ack_without_field_rejected(field: str) -> None:
    body = ack_body()
    del body[field]

    with pytest.raises(ProtocolError, match=rf"missing fields \['{field}'\]"):
        decode(pack(body))


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        pytest.param("of", 5, "invalid field 'of'", id="of-int"),
        pytest.param("of", "p 3", "invalid acknowledged sender", id="of-space"),
        pytest.param("round", 0, "invalid round", id="round-zero"),
        pytest.param("sender", "", "invalid sender", id="sender-empty"),
    ],
)
def test_ack_with_invalid_value_rejected(field: str, value: object, text: str) -> None:
    body = ack_body()
    body[field] = value

    with pytest.raises(ProtocolError, match=text):
        decode(pack(body))


def test_round_start_participants_round_trip() -> None:
    message = RoundStart(
        job="job-1",
        run=RUN,
        round=2,
        theta=(0.5,),
        public_key=MODULUS,
        timeout=30.0,
        participants=("p1", "p4"),
    )

    decoded = decode(encode(message))

    assert decoded == message


def test_no_participants_leaves_field_out() -> None:
    message = RoundStart(
        job="job-1", run=RUN, round=2, theta=(0.5,), public_key=MODULUS, timeout=30.0
    )

    body = msgpack.unpackb(encode(message), raw=False)

    assert "participants" not in body
    assert decode(encode(message)) == message


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param("p1", "invalid field 'participants'", id="string"),
        pytest.param([1, 2], "expected a list of strings", id="integers"),
        pytest.param([], "expected a non-empty list", id="empty"),
        pytest.param(["p1", "p1"], "names a node twice", id="twice"),
        pytest.param(["p/1"], "invalid participant", id="bad-id"),
    ],
)
def test_round_start_invalid_participants_rejected(value: object, text: str) -> None:
    with pytest.raises(ProtocolError, match=text):
        decode(pack(round_start_body(participants=value)))
