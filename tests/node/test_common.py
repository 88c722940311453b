"""Tests for helpers shared by the daemons."""

from __future__ import annotations

from gradchain.node.common import natural_order


def test_natural_order_compares_digit_runs_as_numbers() -> None:
    ids = ["p10", "p2", "learner", "p1", "a12", "a3", "p11"]

    assert sorted(ids, key=natural_order) == ["a3", "a12", "learner", "p1", "p2", "p10", "p11"]
