"""Logistic regression for labels in {0, 1}, with a numerically stable sigmoid and log loss."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def sigmoid(z: npt.ArrayLike) -> FloatArray:
    """Compute 1 / (1 + exp(-z)) element-wise without overflow warnings.

    The form exp(-log(1 + exp(-z))) goes through np.logaddexp, which does not
    evaluate exp of a large argument. For very negative z the outer exp
    underflows to 0, which numpy's default error state ignores.
    """
    values = np.asarray(z, dtype=np.float64)
    result: FloatArray = np.exp(-np.logaddexp(0.0, -values))
    return result


def validate_inputs(
    theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike | None = None
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Convert theta, X and y to float64 arrays and check that their shapes match.

    X must have shape (rows, features), theta shape (features,) and y shape
    (rows,) with every label 0 or 1. Raises ValueError naming the expected and
    the actual shape, or the first invalid label.
    """
    X_array = np.asarray(X, dtype=np.float64)
    if X_array.ndim != 2:
        raise ValueError(
            f"X must be a 2-D array of shape (rows, features), got shape {X_array.shape}"
        )
    rows, features = X_array.shape

    theta_array = np.asarray(theta, dtype=np.float64)
    if theta_array.shape != (features,):
        raise ValueError(
            f"theta must have shape ({features},) to match the {features} columns of X, "
            f"got shape {theta_array.shape}"
        )

    if y is None:
        return theta_array, X_array, None

    y_array = np.asarray(y, dtype=np.float64)
    if y_array.shape != (rows,):
        raise ValueError(
            f"y must have shape ({rows},) to match the {rows} rows of X, got shape {y_array.shape}"
        )
    invalid = ~np.isin(y_array, (0.0, 1.0))
    if invalid.any():
        index = int(np.flatnonzero(invalid)[0])
        raise ValueError(
            f"labels must be 0 or 1, got y[{index}] = {float(y_array[index])!r} "
            "(map the classes to 0 and 1 before training)"
        )
    return theta_array, X_array, y_array


def _require_rows(X: FloatArray, quantity: str) -> None:
    if X.shape[0] == 0:
        raise ValueError(f"cannot compute the {quantity} of zero rows (X has shape {X.shape})")


class LogisticRegression:
    """Logistic regression model: P(y = 1 | x) = sigmoid(x . theta).

    The model is stateless, so one instance serves any number of providers and rounds.
    """

    def gradient_sum(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
        """Compute sum over rows of (sigmoid(x . theta) - y) x, a provider's partial gradient.

        This is the gradient of the summed (not mean) log loss over the rows of
        X. Zero rows give a zero vector.
        """
        theta_array, X_array, y_array = validate_inputs(theta, X, y)
        assert y_array is not None
        residuals = sigmoid(X_array @ theta_array) - y_array
        gradient: FloatArray = X_array.T @ residuals
        return gradient

    def loss(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """Compute the mean log loss (binary cross-entropy) over the rows of X.

        Each row contributes log(1 + exp(-s z)) with z = x . theta and
        s = +1 for label 1, -1 for label 0, computed with np.logaddexp so that a
        confident wrong prediction gives a large finite loss and no overflow.
        """
        theta_array, X_array, y_array = validate_inputs(theta, X, y)
        assert y_array is not None
        _require_rows(X_array, "loss")
        signs = 2.0 * y_array - 1.0
        losses = np.logaddexp(0.0, -signs * (X_array @ theta_array))
        return float(np.mean(losses))

    def predict(self, theta: npt.ArrayLike, X: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Predict label 1 where sigmoid(x . theta) >= 0.5, which is x . theta >= 0, else 0."""
        theta_array, X_array, _ = validate_inputs(theta, X)
        return (X_array @ theta_array >= 0.0).astype(np.int64)

    def accuracy(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """Compute the fraction of rows whose predicted label equals y."""
        theta_array, X_array, y_array = validate_inputs(theta, X, y)
        assert y_array is not None
        _require_rows(X_array, "accuracy")
        return float(np.mean(self.predict(theta_array, X_array) == y_array))

    def evaluate(
        self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike
    ) -> dict[str, float]:
        """Compute the metrics the learner reports on held-out data: mean log loss and accuracy."""
        return {"loss": self.loss(theta, X, y), "accuracy": self.accuracy(theta, X, y)}
