"""The learner's checkpoint: enough state to resume a run after the learner process dies.

The learner writes ``checkpoint.json`` into its results folder each time it
opens a round, before it publishes the RoundStart. The file is replaced
atomically (a temporary file, fsync, os.replace), so a crash leaves either
the previous checkpoint or the new one, never a mix. ``gradchain learner
--resume`` loads it, checks it against the topology and the key file, and
opens the round after the one recorded.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

CHECKPOINT_FILE = "checkpoint.json"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class LearnerCheckpoint:
    """The learner's state when it opened round ``round`` of run ``run``."""

    job: str
    run: str
    #: The last round the learner opened; a resumed learner opens the next one.
    round: int
    #: Successful updates of θ so far.
    iteration: int
    theta: list[float]
    failed_in_a_row: int
    #: Path of the private key file the run's key pair was loaded from.
    private_key: str
    key_fingerprint: str
    #: The completed rounds, as written to ``metrics.json``.
    history: list[dict[str, Any]] = field(default_factory=list)
    failed_rounds: list[dict[str, Any]] = field(default_factory=list)
    #: Seconds the run took before this checkpoint, over every learner process.
    seconds: float = 0.0
    #: Whether the run has ended; such a run cannot be resumed.
    finished: bool = False


def save_checkpoint(folder: Path, checkpoint: LearnerCheckpoint) -> Path:
    """Write ``checkpoint`` to ``folder/checkpoint.json`` atomically and durably."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_FILE
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = {"version": CHECKPOINT_VERSION, **asdict(checkpoint)}
    with temporary.open("w", encoding="utf-8") as stream:
        stream.write(json.dumps(data, indent=1) + "\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    _sync_folder(folder)
    return path


def _sync_folder(folder: Path) -> None:
    """Persist the rename itself; not every platform can open a folder, which is then skipped."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load_checkpoint(folder: Path) -> LearnerCheckpoint:
    """Read ``folder/checkpoint.json``.

    Raises ConfigError naming the file when it is missing, is not valid JSON
    or lacks a field.
    """
    path = folder / CHECKPOINT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"no checkpoint at {path}; start the learner without --resume to begin a new run, "
            "or pass the --results folder of the run to resume"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the checkpoint {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(f"{path} is not a version {CHECKPOINT_VERSION} gradchain checkpoint")
    del data["version"]
    try:
        return LearnerCheckpoint(**data)
    except TypeError as exc:
        raise ConfigError(f"invalid checkpoint {path}: {exc}") from exc
