"""Linear regression with squared error, and the local flagging of rows with large residuals."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from gradchain.errors import ConfigError
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

    ``label_power`` p > 1 declares that each label is the p-th root of the
    quantity of interest, the target, such as y = sqrt(dose) with p = 2.
    :meth:`evaluate` then also reports the error in the target's units.

    ``outlier_threshold`` and ``outlier_mad_scale`` switch on the flagging
    of rows with large residuals after training (:meth:`flag_rows`). At most
    one of them may be positive. ``outlier_threshold`` is an absolute bound
    on |x . theta - y| in the units of y. ``outlier_mad_scale`` is a
    multiple of the robust standard deviation of each provider's own
    residuals (:func:`robust_threshold`).
    """

    def __init__(
        self,
        *,
        label_power: int = 1,
        outlier_threshold: float = 0.0,
        outlier_mad_scale: float = 0.0,
    ) -> None:
        if isinstance(label_power, bool) or not isinstance(label_power, int) or label_power < 1:
            raise ConfigError(f"label_power must be an integer >= 1, got {label_power!r}")
        for name, value in (
            ("outlier_threshold", outlier_threshold),
            ("outlier_mad_scale", outlier_mad_scale),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if outlier_threshold > 0 and outlier_mad_scale > 0:
            raise ConfigError(
                f"outlier_threshold ({outlier_threshold:g}) and outlier_mad_scale "
                f"({outlier_mad_scale:g}) are both set. Set one of them and leave the other at 0"
            )
        self.label_power = label_power
        self.outlier_threshold = float(outlier_threshold)
        self.outlier_mad_scale = float(outlier_mad_scale)

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

        ``mae`` is the mean absolute error, in the units of y. With
        ``label_power`` p > 1 the metrics add ``target_mae``, the mean absolute
        error after raising the predictions and the labels to the power p
        (mg/week for the warfarin data, whose labels are sqrt(dose)). A
        negative prediction counts as a target of 0.
        """
        residuals = self.residuals(theta, X, y)
        require_rows(np.asarray(X, dtype=np.float64), "metrics")
        metrics = {
            "loss": float(np.mean(residuals**2)),
            "mae": float(np.mean(np.abs(residuals))),
        }
        if self.label_power > 1:
            predicted = np.maximum(self.predict(theta, X), 0.0) ** self.label_power
            actual = np.asarray(y, dtype=np.float64) ** self.label_power
            metrics["target_mae"] = float(np.mean(np.abs(predicted - actual)))
        return metrics

    @property
    def flags_rows(self) -> bool:
        """Whether :meth:`flag_rows` is switched on by a positive outlier setting."""
        return self.outlier_threshold > 0 or self.outlier_mad_scale > 0

    def flag_rows(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> BoolArray:
        """Flag a provider's rows whose absolute residual exceeds the configured threshold.

        With ``outlier_mad_scale`` the threshold is computed from the
        residuals of these rows alone, so it stays on the provider too.
        Raises ValueError when flagging is off.
        """
        if self.outlier_threshold > 0:
            return flag_outliers(theta, X, y, self.outlier_threshold)
        if self.outlier_mad_scale > 0:
            residuals = self.residuals(theta, X, y)
            threshold = robust_threshold(residuals, self.outlier_mad_scale)
            flags: BoolArray = np.abs(residuals) > threshold
            return flags
        raise ValueError(
            "row flagging is off: set outlier_threshold or outlier_mad_scale in the [model] table"
        )


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
