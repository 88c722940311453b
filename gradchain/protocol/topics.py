"""MQTT topic names of a job. Every job lives under ``gradchain/<job id>/``."""

from __future__ import annotations

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
