"""Tests for gradchain.node.checkpoint and for resuming a LearnerDaemon from a checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gradchain.errors import ConfigError
from gradchain.node.broker import BrokerAddress
from gradchain.node.checkpoint import (
    CHECKPOINT_FILE,
    LearnerCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from gradchain.node.learner import LearnerDaemon
from gradchain.node.signatures import create_signing_keys
from gradchain.topology import load_topology, write_chain

BROKER = BrokerAddress(host="127.0.0.1", port=1883)  # never connected to in these tests

CHECKPOINT = LearnerCheckpoint(
    job="bc-chain",
    run="0123456789abcdef",
    round=7,
    iteration=5,
    theta=[0.25, -1.5, 3.0e-9],
    failed_in_a_row=2,
    private_key="/keys/learner.key.json",
    key_fingerprint="00112233aabbccdd",
    history=[{"round": 1, "iteration": 1, "contributors": ["p1", "p2"], "seconds": 0.5}],
    failed_rounds=[{"round": 2, "reason": "timed out"}],
    seconds=12.5,
)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, CHECKPOINT)

    assert load_checkpoint(tmp_path) == CHECKPOINT


def test_save_replaces_previous_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, CHECKPOINT)
    newer = replace(CHECKPOINT, round=8, iteration=6, theta=[1.0, 2.0, 3.0])

    save_checkpoint(tmp_path, newer)

    assert load_checkpoint(tmp_path) == newer
    assert sorted(path.name for path in tmp_path.iterdir()) == [CHECKPOINT_FILE]


def test_save_creates_folder(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "job"

    path = save_checkpoint(folder, CHECKPOINT)

    assert path == folder / CHECKPOINT_FILE
    assert json.loads(path.read_text())["version"] == 1


def test_missing_checkpoint_names_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no checkpoint at .*without --resume"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("{", "cannot read the checkpoint", id="cut-short"),
        pytest.param(
            '{"version": 99}', "is not a version 1 gradchain checkpoint", id="other-version"
        ),
        pytest.param("[1, 2]", "is not a version 1 gradchain checkpoint", id="not-an-object"),
        pytest.param('{"version": 1, "job": "x"}', "invalid checkpoint", id="missing-fields"),
    ],
)
def test_invalid_checkpoint_rejected(tmp_path: Path, text: str, error: str) -> None:
    (tmp_path / CHECKPOINT_FILE).write_text(text)

    with pytest.raises(ConfigError, match=error):
        load_checkpoint(tmp_path)


# Resuming a learner daemon


@pytest.fixture
def learner_topology(tmp_path: Path) -> Path:
    path = write_chain(
        tmp_path / "job", "breast-cancer", 3, job_id="bc-chain", key_bits=512, rounds=5, seed=1
    )
    create_signing_keys(load_topology(path))
    return path


def first_learner(topology_path: Path, results: Path) -> LearnerDaemon:
    """Return a learner that has written the checkpoint of round 4, after three updates."""
    daemon = LearnerDaemon(load_topology(topology_path), BROKER, results=results)
    daemon.protocol.round = 4
    daemon.protocol.iteration = 3
    daemon.protocol.theta = np.linspace(-1.0, 1.0, len(daemon.protocol.theta))
    daemon._save_checkpoint(finished=False)
    return daemon


def test_resumed_learner_takes_over_run(learner_topology: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    first = first_learner(learner_topology, results)

    resumed = LearnerDaemon(load_topology(learner_topology), BROKER, results=results, resume=True)

    assert resumed.run_id == first.run_id
    assert resumed.result.run == first.run_id
    np.testing.assert_array_equal(resumed.protocol.theta, first.protocol.theta)
    assert resumed.resumed_from is not None
    assert resumed.resumed_from.round == 4
    assert resumed.resumed_from.iteration == 3


def test_resume_of_finished_run_rejected(learner_topology: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    first_learner(learner_topology, results)._save_checkpoint(finished=True)

    with pytest.raises(ConfigError, match="has already finished"):
        LearnerDaemon(load_topology(learner_topology), BROKER, results=results, resume=True)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        pytest.param({"job": "other-job"}, "belongs to job 'other-job'", id="other-job"),
        pytest.param(
            {"key_fingerprint": "ffffffffffffffff"},
            "was written with the key ffffffffffffffff",
            id="other-key",
        ),
        pytest.param({"theta": [0.5]}, "contains 1 parameters", id="other-model"),
    ],
)
def test_resume_of_mismatched_checkpoint_rejected(
    learner_topology: Path, tmp_path: Path, changes: dict[str, object], error: str
) -> None:
    results = tmp_path / "results"
    first_learner(learner_topology, results)
    save_checkpoint(results, replace(load_checkpoint(results), **changes))  # type: ignore[arg-type]

    with pytest.raises(ConfigError, match=error):
        LearnerDaemon(load_topology(learner_topology), BROKER, results=results, resume=True)
