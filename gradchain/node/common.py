"""Pieces shared by the node and learner daemons."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine, MutableMapping
from typing import Any, TypeVar

from ..errors import DuplicateMessageError, ProtocolError, StaleMessageError

T = TypeVar("T")


class NodeLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefix every record with the node id, so interleaved logs stay readable."""

    def __init__(self, logger: logging.Logger, node_id: str) -> None:
        super().__init__(logger, {"node": node_id})
        self.node_id = node_id

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"[{self.node_id}] {msg}", kwargs


def log_dropped(log: NodeLogger, topic: str, error: ProtocolError) -> None:
    """Log a message the protocol rejected, at a level that matches how normal it is.

    Duplicates are expected with QoS 1, so they are DEBUG. Messages of other
    runs or closed rounds happen around restarts, so they are INFO. Anything
    malformed or hostile is a WARNING because it means a buggy or malicious peer.
    """
    if isinstance(error, DuplicateMessageError):
        log.debug("dropped a duplicate on %s: %s", topic, error)
    elif isinstance(error, StaleMessageError):
        log.info("dropped a stale message on %s: %s", topic, error)
    else:
        log.warning("dropped an invalid message on %s: %s", topic, error)


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on the standard event loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def natural_order(node_id: str) -> tuple[tuple[int, int | str], ...]:
    """Return a sort key that puts p2 before p10: digit runs compare as numbers."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.split(r"(\d+)", node_id)
        if part
    )
