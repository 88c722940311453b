"""Linear regression with squared error, and the local flagging of rows with large residuals."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gradchain.models._arrays import as_matrix, as_targets, as_weights, require_rows

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def _validate(
    theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    X_array = as_matrix(X)
    theta_array = as_weights(theta, X_array.shape[1], f"the {X_array.shape[1]} columns of X")
    return theta_array, X_array, as_targets(y, X_array.shape[0])


class LinearRegression:
    """Linear regression model: the prediction for row x is x . theta.

    The providers minimise the summed half squared error
    1/2 * sum over rows of (x . theta - y)**2. The model is stateless, so one
    instance serves any number of providers and rounds.
    """

    def gradient_sum(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
        """Compute sum over rows of (x . theta - y) x, a provider's partial gradient.

        This is the gradient of 1/2 * sum of squared residuals. Zero rows give a
        zero vector.
        """
        theta_array, X_array, y_array = _validate(theta, X, y)
        gradient: FloatArray = X_array.T @ (X_array @ theta_array - y_array)
        return gradient

    def predict(self, theta: npt.ArrayLike, X: npt.ArrayLike) -> FloatArray:
        """Compute x . theta for every row of X."""
        X_array = as_matrix(X)
        theta_array = as_weights(theta, X_array.shape[1], f"the {X_array.shape[1]} columns of X")
        prediction: FloatArray = X_array @ theta_array
        return prediction

    def residuals(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
        """Compute x . theta - y for every row, in the units of y."""
        theta_array, X_array, y_array = _validate(theta, X, y)
        residuals: FloatArray = X_array @ theta_array - y_array
        return residuals

    def loss(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """Compute the mean squared error over the rows of X."""
        residuals = self.residuals(theta, X, y)
        require_rows(np.asarray(X, dtype=np.float64), "mean squared error")
        return float(np.mean(residuals**2))

    def evaluate(
        self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike
    ) -> dict[str, float]:
        """Compute the held-out metrics: ``loss`` (mean squared error) and ``mae``.

        ``mae`` is the mean absolute error, in the units of y.
        """
        residuals = self.residuals(theta, X, y)
        require_rows(np.asarray(X, dtype=np.float64), "metrics")
        return {"loss": float(np.mean(residuals**2)), "mae": float(np.mean(np.abs(residuals)))}


def flag_outliers(
    theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike, threshold: float
) -> BoolArray:
    """Flag the rows whose absolute residual |x . theta - y| exceeds ``threshold``.

    A provider runs this on its own rows after training, with the final theta
    that the learner publishes, so the rows and the flags never leave it.
    ``threshold`` is in the units of y. Raises ValueError for a threshold that
    is negative or not finite.
    """
    if not (np.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    residuals = LinearRegression().residuals(theta, X, y)
    flags: BoolArray = np.abs(residuals) > threshold
    return flags


def robust_threshold(residuals: npt.ArrayLike, scale: float = 3.5) -> float:
    """Return ``scale`` times the median absolute deviation (MAD) of the residuals, made consistent.

    The MAD is multiplied by 1.4826 so that it estimates the standard deviation
    of normally distributed residuals. Unlike the standard deviation, it barely
    moves when a few residuals are huge, so the outliers cannot hide by
    inflating the threshold. A provider can compute it over its own residuals.
    Raises ValueError for no residuals or a scale that is not positive.
    """
    values = np.asarray(residuals, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("residuals is empty, expected at least one value")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    deviation = np.median(np.abs(values - np.median(values)))
    return float(scale * 1.4826 * deviation)
