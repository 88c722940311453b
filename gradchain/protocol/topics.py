"""MQTT topic names of a job. Every job lives under ``gradchain/<job id>/``."""

from __future__ import annotations

from ..errors import ProtocolError
from .messages import JobDone, Message, RoundStart, Status

PREFIX = "gradchain"


def round_topic(job: str) -> str:
    """Topic of the learner's retained ``RoundStart`` and ``JobDone`` messages."""
    return f"{PREFIX}/{job}/round"


def inbox_topic(job: str, node_id: str) -> str:
    """Topic on which ``node_id`` (or the learner) receives contributions."""
    return f"{PREFIX}/{job}/inbox/{node_id}"


def status_topic(job: str, node_id: str) -> str:
    """Topic of a node's retained online or offline status."""
    return f"{PREFIX}/{job}/status/{node_id}"


def status_wildcard(job: str) -> str:
    return f"{PREFIX}/{job}/status/+"


def job_wildcard(job: str) -> str:
    """Every topic of the job, for monitors and audits."""
    return f"{PREFIX}/{job}/#"


def check_topic(topic: str, message: Message, *, receiver: str) -> None:
    """Raise ProtocolError unless ``message`` is a type that belongs on ``topic``.

    RoundStart and JobDone belong on the round topic, a node's Status on its
    own status topic, and Contribution and Ack on the inbox of ``receiver``.
    A client that may publish on one topic therefore cannot pass another
    kind of message off through it, which keeps per-topic broker ACLs
    meaningful.
    """
    job = message.job
    if isinstance(message, RoundStart | JobDone):
        expected = round_topic(job)
    elif isinstance(message, Status):
        expected = status_topic(job, message.node)
    else:
        expected = inbox_topic(job, receiver)
    if topic != expected:
        raise ProtocolError(
            f"{type(message).__name__} arrived on {topic!r}, but it belongs on {expected!r}"
        )
