"""Per-node JSON-lines files of injected faults and protocol events.

Every node appends one JSON object per line to ``<events dir>/<node id>.jsonl``:
faults that fired, resends, reroutes, partial sums forwarded at a deadline,
dropped duplicates, lost and restored connections. The report after a run
reads them back. A restarted process appends to the file of the one before it.

Each line has ``time`` (Unix seconds), ``node``, ``event``, ``run`` and
``round`` (null when unknown) and the event's own fields.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)


class EventLog:
    """Appends events of one node to its JSON-lines file, or only keeps count without a folder."""

    def __init__(self, folder: Path | None, node_id: str) -> None:
        self.node_id = node_id
        self.path = None if folder is None else folder / f"{node_id}.jsonl"
        self.counts: dict[str, int] = {}
        self._file: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    def record(
        self, event: str, *, run: str | None = None, round: int | None = None, **fields: Any
    ) -> None:
        """Append one event and flush it, so that a crash right after loses nothing."""
        self.counts[event] = self.counts.get(event, 0) + 1
        if self._file is None:
            return
        entry = {
            "time": _timestamp(),
            "node": self.node_id,
            "event": event,
            "run": run,
            "round": round,
        }
        entry.update(fields)
        try:
            self._file.write(json.dumps(entry, sort_keys=False) + "\n")
            self._file.flush()
        except OSError as error:
            logger.warning(
                "[%s] writing the event log %s failed: %s", self.node_id, self.path, error
            )

    def sync(self) -> None:
        """Force the written events to disk, before the process ends without cleanup."""
        if self._file is None:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as error:
            logger.warning(
                "[%s] syncing the event log %s failed: %s", self.node_id, self.path, error
            )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _timestamp() -> float:
    """Return the Unix time rounded to 0.1 ms, which keeps the lines short."""
    return float(f"{time.time():.4f}")


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the events of one JSON-lines file, skipping lines that are not JSON objects.

    A process killed while writing can leave a last line cut short; it is skipped with a warning.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d: skipped a line that is not valid JSON", path, number)
            continue
        if isinstance(entry, dict):
            yield entry
