"""Tests for the per-round line that ``gradchain run`` prints."""

from __future__ import annotations

import pytest

from gradchain.cli import _print_round
from gradchain.node.learner import RoundRecord


def record(round: int, iteration: int) -> RoundRecord:
    return RoundRecord(
        round=round,
        iteration=iteration,
        contributors=["p1", "p2", "p3"],
        seconds=0.25,
        step=0.1,
        learning_rate=0.05,
        loss=0.5,
        accuracy=0.9,
        scores={"accuracy": 0.9, "loss": 0.5},
    )


def test_round_line_counts_updates(capsys: pytest.CaptureFixture[str]) -> None:
    _print_round(record(round=4, iteration=4), max_rounds=60)

    assert capsys.readouterr().out == (
        "round    4/60  loss 0.5  accuracy 0.9  contributors 3  0.25 s\n"
    )


def test_round_line_after_repeat(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Round 4 failed and was repeated as round 5, which made the fourth update.
    _print_round(record(round=5, iteration=4), max_rounds=60)

    assert capsys.readouterr().out.endswith("0.25 s  (logged as round 5)\n")
