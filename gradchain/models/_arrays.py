"""Shape checks shared by the models that take a weight vector and a feature matrix."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def as_matrix(X: npt.ArrayLike, name: str = "X") -> FloatArray:
    """Convert ``X`` to a float64 array and raise ValueError unless it is 2-D."""
    array = np.asarray(X, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (rows, columns), got shape {array.shape}"
        )
    return array


def as_weights(theta: npt.ArrayLike, length: int, what: str) -> FloatArray:
    """Convert theta to a float64 vector and raise ValueError unless it has ``length`` entries.

    ``what`` names the source of the length in the error message.
    """
    array = np.asarray(theta, dtype=np.float64)
    if array.shape != (length,):
        raise ValueError(f"theta must have shape ({length},) to match {what}, got {array.shape}")
    return array


def as_targets(y: npt.ArrayLike, rows: int) -> FloatArray:
    """Convert y to a float64 vector with one entry per row of X."""
    array = np.asarray(y, dtype=np.float64)
    if array.shape != (rows,):
        raise ValueError(
            f"y must have shape ({rows},) to match the {rows} rows of X, got shape {array.shape}"
        )
    return array


def require_rows(X: FloatArray, quantity: str) -> None:
    """Raise ValueError when X has no rows, because a mean over zero rows is undefined."""
    if X.shape[0] == 0:
        raise ValueError(f"cannot compute the {quantity} of zero rows (X has shape {X.shape})")
