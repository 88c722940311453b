"""Tests for gradchain.protocol.flags: the count of flagged rows a provider sends."""

from __future__ import annotations

import msgpack
import pytest

from gradchain.errors import ProtocolError
from gradchain.protocol.flags import (
    FlagCount,
    decode_flag_count,
    encode_flag_count,
    flags_topic,
    flags_wildcard,
)

RUN = "0123456789abcdef"


def test_round_trip() -> None:
    message = FlagCount(job="warfarin", run=RUN, node="p3", flagged=7)

    assert decode_flag_count(encode_flag_count(message)) == message


def test_payload_contains_only_the_count() -> None:
    body = msgpack.unpackb(encode_flag_count(FlagCount(job="j", run=RUN, node="p1", flagged=2)))

    assert body == {
        "v": 1,
        "type": "flag_count",
        "job": "j",
        "run": RUN,
        "node": "p1",
        "flagged": 2,
    }


def test_topics() -> None:
    assert flags_topic("job", "p1") == "gradchain/job/flags/p1"
    assert flags_wildcard("job") == "gradchain/job/flags/+"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"flagged": -1}, "invalid flagged count -1"),
        ({"flagged": True}, "invalid flagged count True"),
        ({"flagged": 1.5}, "invalid flagged count 1.5"),
        ({"node": "p 1"}, "invalid node id"),
        ({"run": "xyz"}, "invalid run id"),
        ({"v": 2}, "unsupported wire format version 2"),
        ({"type": "status"}, "expected a map with type 'flag_count'"),
        ({"rows": 100}, "expected the fields"),
    ],
)
def test_invalid_payload_rejected(body: dict[str, object], message: str) -> None:
    fields = {"v": 1, "type": "flag_count", "job": "j", "run": RUN, "node": "p1", "flagged": 2}
    fields.update(body)

    with pytest.raises(ProtocolError, match=message):
        decode_flag_count(msgpack.packb(fields))


def test_oversized_payload_rejected() -> None:
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode_flag_count(b"\x00" * 2000)
