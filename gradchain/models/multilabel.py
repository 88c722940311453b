"""Several labels per row: one model per label column, trained together in the same rounds.

For L label columns and d data columns, theta is the L parameter vectors of
length d one after another: theta[j * d:(j + 1) * d] belongs to label j. The
gradient is the per-label gradients concatenated the same way, which keeps it
additive over rows, so the providers and the learner treat the L models as
one parameter vector of length L * d.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gradchain.models._arrays import as_matrix
from gradchain.models.interface import Model
from gradchain.models.logistic import LogisticRegression, validate_inputs

FloatArray = npt.NDArray[np.float64]


def _label_matrix(y: npt.ArrayLike, rows: int) -> FloatArray:
    labels = np.asarray(y, dtype=np.float64)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.shape[0] != rows or labels.shape[1] == 0:
        raise ValueError(
            f"y must be a label matrix of shape ({rows}, labels) with labels >= 1, "
            f"one row per row of X, got shape {np.shape(y)}"
        )
    return labels


class MultiLabel:
    """One ``base`` model per column of the label matrix y, with the parameters concatenated.

    ``base`` defaults to logistic regression, for labels that are 0 or 1.
    """

    def __init__(self, base: Model | None = None) -> None:
        self.base: Model = LogisticRegression() if base is None else base

    def _split(
        self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        X_array = as_matrix(X)
        labels = _label_matrix(y, X_array.shape[0])
        columns = X_array.shape[1]
        count = labels.shape[1]
        theta_array = np.asarray(theta, dtype=np.float64)
        if theta_array.shape != (count * columns,):
            raise ValueError(
                f"theta must have shape ({count * columns},): {count} labels x {columns} "
                f"columns of X, got shape {theta_array.shape}"
            )
        return theta_array.reshape(count, columns), X_array, labels

    def gradient_sum(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
        """Compute the base model's gradient_sum for every label and concatenate them like theta."""
        thetas, X_array, labels = self._split(theta, X, y)
        parts = [
            self.base.gradient_sum(thetas[label], X_array, labels[:, label])
            for label in range(labels.shape[1])
        ]
        return np.concatenate(parts).astype(np.float64)

    def loss(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """Compute the base model's loss averaged over the labels."""
        thetas, X_array, labels = self._split(theta, X, y)
        losses = [
            self.base.loss(thetas[label], X_array, labels[:, label])
            for label in range(labels.shape[1])
        ]
        return float(np.mean(losses))

    def evaluate(
        self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike
    ) -> dict[str, float]:
        """Average each of the base model's metrics over the labels, and report each label's too.

        With logistic regression this gives ``loss`` (mean log loss) and
        ``accuracy``, the share of correct (row, label) pairs, which is
        1 - Hamming loss. ``subset_accuracy`` adds the share of rows whose
        labels are all correct. Every base metric is also reported per label
        column j as ``<metric>_label_<j>``, such as ``accuracy_label_0``.
        """
        thetas, X_array, labels = self._split(theta, X, y)
        per_label = [
            self.base.evaluate(thetas[label], X_array, labels[:, label])
            for label in range(labels.shape[1])
        ]
        metrics = {
            key: float(np.mean([scores[key] for scores in per_label])) for key in per_label[0]
        }
        for label, scores in enumerate(per_label):
            metrics.update({f"{key}_label_{label}": float(value) for key, value in scores.items()})
        if isinstance(self.base, LogisticRegression):
            predicted = np.column_stack(
                [self.base.predict(thetas[label], X_array) for label in range(labels.shape[1])]
            )
            metrics["subset_accuracy"] = float(np.mean(np.all(predicted == labels, axis=1)))
        return metrics

    def parameter_count(self, X: FloatArray, y: FloatArray) -> int:
        """Return (label columns) x (data columns)."""
        X_array = as_matrix(X)
        return int(_label_matrix(y, X_array.shape[0]).shape[1] * X_array.shape[1])

    def check_data(self, X: FloatArray, y: FloatArray, parameters: int) -> None:
        """Raise ValueError unless parameters = labels x columns and the labels suit the base model.

        With logistic regression every label must be 0 or 1.
        """
        X_array = as_matrix(X)
        labels = _label_matrix(y, X_array.shape[0])
        expected = labels.shape[1] * X_array.shape[1]
        if parameters != expected:
            raise ValueError(
                f"{X_array.shape[1]} feature columns and {labels.shape[1]} label columns need "
                f"job.features = {expected}, but job.features is {parameters}"
            )
        if isinstance(self.base, LogisticRegression):
            for label in range(labels.shape[1]):
                try:
                    validate_inputs(np.zeros(X_array.shape[1]), X_array, labels[:, label])
                except ValueError as error:
                    raise ValueError(f"label column {label}: {error}") from None
