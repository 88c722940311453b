"""The Model protocol, the optional methods a model may add to it, and the calls that use them.

Logistic and linear regression need only the Model protocol: one parameter per
data column, a start at theta = 0, and a gradient that depends on nothing but
theta and the provider's rows. A model that breaks one of these assumptions
implements the matching optional method:

- ``initial_theta(parameters)`` when theta = 0 is a stationary point that
  gradient descent cannot leave (PCA, matrix factorisation);
- ``parameter_count(X, y)`` and ``check_data(X, y, parameters)`` when the
  length of theta is not the number of columns of X;
- ``create_state(X, y)`` and ``gradient_sum(theta, X, y, state)`` when a
  provider keeps values of its own between rounds (user factors);
- ``flags_rows`` and ``flag_rows(theta, X, y)`` when each provider flags
  rows of its own after training, such as a regression's outliers.

Code that runs a job calls the functions of this module, not the methods, so
that a model without an optional method gets the stateless default.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


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


@runtime_checkable
class SupportsInitialTheta(Protocol):
    """A model whose gradient descent must start from a given theta instead of zeros."""

    def initial_theta(self, parameters: int) -> FloatArray: ...


@runtime_checkable
class SupportsParameterCount(Protocol):
    """A model whose number of parameters is not the number of columns of X."""

    def parameter_count(self, X: FloatArray, y: FloatArray) -> int: ...

    def check_data(self, X: FloatArray, y: FloatArray, parameters: int) -> None: ...


@runtime_checkable
class LocalStateModel(Protocol):
    """A model whose providers keep state between rounds.

    The provider calls ``create_state(X, y)`` once for its rows and passes the
    returned object to every ``gradient_sum`` call of the job. The state never
    leaves the provider.
    """

    def create_state(self, X: npt.ArrayLike, y: npt.ArrayLike) -> object: ...

    def gradient_sum(
        self,
        theta: npt.ArrayLike,
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        state: object | None = None,
    ) -> npt.NDArray[np.float64]: ...


@runtime_checkable
class SupportsRowFlags(Protocol):
    """A model whose providers flag rows of their own with the final theta, such as outliers.

    Only the number of flagged rows may leave a provider; the rows and the
    flags stay on it.
    """

    @property
    def flags_rows(self) -> bool: ...

    def flag_rows(
        self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike
    ) -> npt.NDArray[np.bool_]: ...


def flags_rows(model: Model) -> bool:
    """Return whether the model's providers flag rows after training."""
    return isinstance(model, SupportsRowFlags) and bool(model.flags_rows)


def count_flagged_rows(
    model: Model, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike
) -> int:
    """Count the provider's rows that the model flags with ``theta``.

    Raises ValueError when the model does not flag rows (see :func:`flags_rows`).
    """
    if not isinstance(model, SupportsRowFlags) or not model.flags_rows:
        raise ValueError(f"{type(model).__name__} is not configured to flag rows")
    return int(np.count_nonzero(model.flag_rows(theta, X, y)))


def initial_theta(model: Model, parameters: int) -> FloatArray:
    """Return the theta that round 1 starts from: the model's own choice, or zeros."""
    if parameters < 1:
        raise ValueError(f"parameters must be at least 1, got {parameters}")
    if isinstance(model, SupportsInitialTheta):
        theta = np.asarray(model.initial_theta(parameters), dtype=np.float64)
        if theta.shape != (parameters,):
            raise ValueError(
                f"{type(model).__name__}.initial_theta returned shape {theta.shape}, "
                f"expected ({parameters},)"
            )
        return theta
    return np.zeros(parameters, dtype=np.float64)


def parameter_count(model: Model, X: npt.ArrayLike, y: npt.ArrayLike) -> int:
    """Return the length of theta that the model needs for data shaped like ``X`` and ``y``.

    Without the optional method it is the number of columns of ``X``.
    """
    X_array = np.asarray(X, dtype=np.float64)
    if isinstance(model, SupportsParameterCount):
        return model.parameter_count(X_array, np.asarray(y, dtype=np.float64))
    if X_array.ndim != 2:
        raise ValueError(f"X must be a 2-D array of shape (rows, features), got {X_array.shape}")
    return int(X_array.shape[1])


def check_model_data(model: Model, X: npt.ArrayLike, y: npt.ArrayLike, parameters: int) -> None:
    """Raise ValueError unless the data fits a model with ``parameters`` parameters.

    Only models with ``check_data`` are checked here. For the others the
    caller keeps its own check that X has ``parameters`` columns.
    """
    if isinstance(model, SupportsParameterCount):
        model.check_data(
            np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64), parameters
        )


def create_local_state(model: Model, X: npt.ArrayLike, y: npt.ArrayLike) -> object | None:
    """Create a provider's state for its rows, or return None for a stateless model."""
    if isinstance(model, LocalStateModel):
        return model.create_state(X, y)
    return None


def provider_gradient(
    model: Model,
    theta: npt.ArrayLike,
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    state: object | None,
) -> FloatArray:
    """Compute a provider's gradient_sum, passing its state when the model keeps one."""
    if isinstance(model, LocalStateModel):
        return np.asarray(model.gradient_sum(theta, X, y, state), dtype=np.float64)
    return np.asarray(model.gradient_sum(theta, X, y), dtype=np.float64)
