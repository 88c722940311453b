"""Tests for the plaintext reference that ``gradchain run`` trains after a job."""

from __future__ import annotations

from pathlib import Path

from gradchain.node.launcher import plaintext_baseline
from gradchain.topology import load_topology, write_chain


def test_diverging_reference_is_reported(tmp_path: Path) -> None:
    topology = load_topology(
        write_chain(tmp_path, "warfarin", 4, key_bits=512, learning_rate=1e6, rounds=50)
    )

    baseline = plaintext_baseline(topology)

    assert baseline.error is not None
    assert "lower learning_rate" in baseline.error
    assert baseline.theta == []
    assert baseline.scores == {}


def test_converging_reference_has_no_error(tmp_path: Path) -> None:
    topology = load_topology(write_chain(tmp_path, "breast-cancer", 4, key_bits=512, rounds=5))

    baseline = plaintext_baseline(topology)

    assert baseline.error is None
    assert baseline.rounds == 5
    assert baseline.accuracy is not None
    assert baseline.accuracy > 0.8
