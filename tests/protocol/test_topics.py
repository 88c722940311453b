"""Tests for the topic each message type belongs on."""

from __future__ import annotations

import pytest

from gradchain.errors import ProtocolError
from gradchain.protocol.messages import Ack, JobDone, Liveness, Message, RoundStart, Status
from gradchain.protocol.topics import check_topic

RUN = "0123456789abcdef"
START = RoundStart(job="job-1", run=RUN, round=1, theta=(0.5,), public_key=3233, timeout=30.0)
DONE = JobDone(job="job-1", run=RUN, round=3, theta=(0.5,), reason="converged")
STATUS = Status(job="job-1", node="p1", state=Liveness.ONLINE, instance=RUN)
ACK = Ack(job="job-1", run=RUN, round=1, sender="p2", of="p1")


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("gradchain/job-1/round", START),
        ("gradchain/job-1/round", DONE),
        ("gradchain/job-1/status/p1", STATUS),
        ("gradchain/job-1/inbox/p1", ACK),
    ],
)
def test_message_on_its_own_topic_passes(topic: str, message: Message) -> None:
    check_topic(topic, message, receiver="p1")


@pytest.mark.parametrize(
    ("topic", "message", "expected"),
    [
        ("gradchain/job-1/status/p1", START, "gradchain/job-1/round"),
        ("gradchain/job-1/inbox/p1", DONE, "gradchain/job-1/round"),
        ("gradchain/job-1/status/p2", STATUS, "gradchain/job-1/status/p1"),
        ("gradchain/job-1/status/p1", ACK, "gradchain/job-1/inbox/p1"),
        ("gradchain/job-1/inbox/p3", ACK, "gradchain/job-1/inbox/p1"),
    ],
)
def test_message_on_another_topic_is_rejected(topic: str, message: Message, expected: str) -> None:
    with pytest.raises(ProtocolError, match=f"belongs on '{expected}'"):
        check_topic(topic, message, receiver="p1")
