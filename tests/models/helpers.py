"""Helpers shared by the model tests: finite differences and the location of MovieLens 100K."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

MOVIELENS_VARIABLE = "GRADCHAIN_MOVIELENS_100K"
MOVIELENS_DEFAULT = Path("/work/shared/data/movielens-100k")


def central_difference(
    function: Callable[[np.ndarray], float], theta: np.ndarray, h: float = 1e-5
) -> np.ndarray:
    """Return the gradient of ``function`` at ``theta`` by central differences with step ``h``."""
    gradient = np.empty_like(theta)
    for index in range(theta.size):
        offset = np.zeros_like(theta)
        offset[index] = h
        gradient[index] = (function(theta + offset) - function(theta - offset)) / (2 * h)
    return gradient


def movielens_folder() -> Path:
    """Return the MovieLens 100K folder, or skip the test when it has no u.data.

    The folder is $GRADCHAIN_MOVIELENS_100K, or MOVIELENS_DEFAULT when it is unset. The
    data set is not in the repository because its licence forbids redistribution.
    """
    folder = Path(os.environ.get(MOVIELENS_VARIABLE, str(MOVIELENS_DEFAULT)))
    if not (folder / "u.data").is_file():
        pytest.skip(
            f"MovieLens 100K not found: {folder / 'u.data'} is missing. Download ml-100k from "
            f"https://grouplens.org/datasets/movielens/100k/ and set {MOVIELENS_VARIABLE} "
            "to its folder"
        )
    return folder
