"""Tests for the synthetic logistic-regression data set of gradchain.data."""

from __future__ import annotations

import numpy as np
import pytest

from gradchain.data import load_split, parse_synthetic_name, synthetic_dataset
from gradchain.errors import ConfigError


def test_synthetic_name_gives_features_and_rows() -> None:
    assert parse_synthetic_name("synthetic:100") == (100, 1000)
    assert parse_synthetic_name("synthetic:10000x300") == (10000, 300)


@pytest.mark.parametrize(
    "name", ["synthetic:", "synthetic:x5", "synthetic:10xfew", "synthetic:1", "synthetic:10x3"]
)
def test_synthetic_name_rejects_invalid(name: str) -> None:
    with pytest.raises(ConfigError, match="synthetic"):
        parse_synthetic_name(name)


def test_synthetic_dataset_shape_and_intercept() -> None:
    dataset = synthetic_dataset(7, 60, seed=1)
    assert dataset.X.shape == (60, 7)
    np.testing.assert_array_equal(dataset.X[:, -1], np.ones(60))
    assert set(np.unique(dataset.y)) == {0.0, 1.0}


def test_synthetic_dataset_is_seeded() -> None:
    first, second, other = (
        synthetic_dataset(5, 40, seed=3),
        synthetic_dataset(5, 40, seed=3),
        synthetic_dataset(5, 40),
    )
    np.testing.assert_array_equal(first.X, second.X)
    np.testing.assert_array_equal(first.y, second.y)
    assert not np.array_equal(first.X, other.X)


def test_load_split_of_synthetic_data() -> None:
    split = load_split("synthetic:12x100", test_fraction=0.2, seed=0)
    assert split.model == "logistic"
    assert split.train.features == 12
    assert split.train.rows + split.test.rows == 100
    with pytest.raises(ConfigError, match="takes no path"):
        load_split("synthetic:12", path="somewhere")
