"""The interface every trainable model implements, and the lookup of models by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from gradchain.errors import ConfigError
from gradchain.models.logistic import LogisticRegression


class Model(Protocol):
    """Objective that providers differentiate over their rows and the learner evaluates.

    gradient_sum must be additive over rows: the gradient over the union of
    several shards equals the sum of the gradients over each shard. The
    encrypted protocol sums these partial gradients without seeing them.
    """

    def gradient_sum(
        self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike
    ) -> npt.NDArray[np.float64]: ...

    def loss(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> float: ...

    def evaluate(
        self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike
    ) -> dict[str, float]: ...


_MODEL_FACTORIES: dict[str, Callable[[], Model]] = {
    "logistic": LogisticRegression,
}

MODEL_NAMES: tuple[str, ...] = tuple(sorted(_MODEL_FACTORIES))
"""Names that get_model accepts, which are the valid values of the job's ``model`` setting."""


def get_model(name: str) -> Model:
    """Create the model registered under ``name``.

    Raises ConfigError listing the known names when ``name`` is not one of them.
    """
    factory = _MODEL_FACTORIES.get(name)
    if factory is None:
        known = ", ".join(repr(known_name) for known_name in MODEL_NAMES)
        raise ConfigError(f"unknown model {name!r}, expected one of: {known}")
    return factory()
