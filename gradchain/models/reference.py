"""Exact plaintext solutions on the pooled training rows, and how a trained theta compares.

The learner never receives the providers' rows. To judge what an encrypted run
reached, ``gradchain run`` pools every provider's rows, as one party holding
all the data could, and solves the job's objective with a standard solver:

- ``linear``: least squares with numpy.linalg.lstsq;
- ``logistic`` and ``multilabel-logistic``: scikit-learn's
  LogisticRegression (lbfgs), one fit per label column;
- ``pca``: numpy.linalg.svd, whose top k right singular vectors span the
  optimal subspace;
- ``factorisation``: alternating least squares (:func:`alternating_least_squares`).

Distributed gradient descent over P providers minimises the mean over the
providers of their summed losses plus l2 * ||theta||^2. Multiplied by P,
that is the pooled summed loss plus P * l2 * ||theta||^2, so each solver
gets that penalty. PCA has no penalty in this module because the job's l2
only shrinks W, which leaves its span unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gradchain.models.factorisation import MatrixFactorisation, alternating_least_squares
from gradchain.models.interface import Model
from gradchain.models.linear import LinearRegression
from gradchain.models.logistic import LogisticRegression
from gradchain.models.multilabel import MultiLabel
from gradchain.models.pca import PCA, orthonormal_basis, principal_angles, top_components

FloatArray = npt.NDArray[np.float64]
Shards = Sequence[tuple[FloatArray, FloatArray]]

#: Sweeps of alternating least squares for the factorisation reference.
ALS_ITERATIONS = 30


@dataclass(frozen=True, kw_only=True)
class PooledSolution:
    """The exact solution of the job's objective on the pooled training rows."""

    method: str
    """The solver and what it was given, for the report."""
    theta: FloatArray
    converged: bool = True
    """False when the solver stopped at its iteration limit (scikit-learn's lbfgs)."""


def solve_pooled(
    model: Model, shards: Shards, *, l2: float, parameters: int
) -> PooledSolution | None:
    """Solve the job's objective on the rows of every shard, or return None when no solver fits.

    ``l2`` is the job's penalty and ``parameters`` the job's theta length.
    Returns None for a model without a solver here and for factorisation
    with l2 = 0, whose alternating least squares needs a positive item
    penalty. Raises ValueError when the pooled data cannot be solved, for
    example labels of one class only for logistic regression.
    """
    if not shards:
        raise ValueError("shards is empty, expected at least one provider's (X, y)")
    providers = len(shards)
    X = np.vstack([np.asarray(features, dtype=np.float64) for features, _ in shards])
    y = np.concatenate([np.asarray(labels, dtype=np.float64) for _, labels in shards])
    penalty = providers * l2

    if isinstance(model, LinearRegression):
        return _least_squares(X, y, penalty)
    if isinstance(model, LogisticRegression):
        return _logistic(X, y[:, None], penalty, "scikit-learn LogisticRegression (lbfgs)")
    if isinstance(model, MultiLabel) and isinstance(model.base, LogisticRegression):
        labels = y if y.ndim == 2 else y[:, None]
        return _logistic(
            X, labels, penalty, "scikit-learn LogisticRegression (lbfgs), one per label column"
        )
    if isinstance(model, PCA):
        basis, _ = top_components(X, model.components)
        return PooledSolution(
            method=f"numpy.linalg.svd of the pooled training rows, top {model.components} "
            "right singular vectors",
            theta=np.asarray(basis.ravel(), dtype=np.float64),
        )
    if isinstance(model, MatrixFactorisation):
        if l2 <= 0:
            return None
        theta = alternating_least_squares(
            X,
            y,
            model=model,
            items=parameters // model.width,
            item_l2=2.0 * penalty,
            iterations=ALS_ITERATIONS,
        )
        return PooledSolution(
            method=f"alternating least squares on the pooled training ratings, "
            f"{ALS_ITERATIONS} sweeps, item penalty 2 * providers * l2",
            theta=theta,
        )
    return None


def _least_squares(X: FloatArray, y: FloatArray, penalty: float) -> PooledSolution:
    # Minimising 1/2 ||X theta - y||^2 + penalty ||theta||^2 is least squares on X
    # stacked over sqrt(2 penalty) I, with zero targets for the added rows.
    method = "numpy.linalg.lstsq on the pooled training rows"
    if penalty > 0:
        columns = X.shape[1]
        X = np.vstack([X, np.sqrt(2.0 * penalty) * np.eye(columns)])
        y = np.concatenate([y, np.zeros(columns)])
        method += ", with ridge rows for the penalty providers * l2"
    theta = np.linalg.lstsq(X, y, rcond=None)[0]
    return PooledSolution(method=method, theta=np.asarray(theta, dtype=np.float64))


def _logistic(X: FloatArray, labels: FloatArray, penalty: float, method: str) -> PooledSolution:
    # Imported here so that importing the models does not import scikit-learn.
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression as ScikitLogisticRegression

    # scikit-learn minimises C * sum of log losses + 1/2 ||w||^2, which is the
    # pooled objective sum of log losses + penalty ||w||^2 divided by 2 penalty.
    # The intercept is a column of X here, so it is penalised like every weight.
    # C = inf, scikit-learn's spelling of no penalty since 1.8, is also valid before.
    options: dict[str, object] = {
        "fit_intercept": False,
        "max_iter": 10_000,
        "tol": 1e-10,
        "C": 1.0 / (2.0 * penalty) if penalty > 0 else np.inf,
    }
    if penalty == 0:
        method += ", no penalty"
    parts = []
    converged = True
    for column in range(labels.shape[1]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            fitted = ScikitLogisticRegression(**options).fit(X, labels[:, column])
        converged &= not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        parts.append(np.asarray(fitted.coef_, dtype=np.float64).ravel())
    return PooledSolution(method=method, theta=np.concatenate(parts), converged=converged)


def compare_with_pooled(
    model: Model, theta: npt.ArrayLike, solution: PooledSolution, shards: Shards
) -> dict[str, float | list[float]]:
    """Compare a trained theta with the pooled solution.

    For PCA the figures are the principal angles in degrees between the
    two subspaces (``principal_angles_degrees``, ascending, and their
    maximum). They also contain the share of the pooled training rows' sum
    of squares that each subspace keeps: ``explained_variance_ratio`` for
    theta and ``optimal_explained_variance_ratio`` for the SVD. For factorisation
    there are none, because the item factors are only defined up to an
    invertible transformation, and the held-out scores are the comparison.
    For the other models they are the largest absolute difference of a
    parameter and the relative difference ||theta - theta*|| / ||theta*||,
    which is left out when theta* = 0.
    """
    trained = np.asarray(theta, dtype=np.float64)
    if trained.shape != solution.theta.shape:
        raise ValueError(
            f"theta has shape {trained.shape}, but the pooled solution has {solution.theta.shape}"
        )
    if isinstance(model, MatrixFactorisation):
        return {}
    if isinstance(model, PCA):
        X = np.vstack([np.asarray(features, dtype=np.float64) for features, _ in shards])
        columns = X.shape[1]
        W = trained.reshape(columns, model.components)
        optimum = solution.theta.reshape(columns, model.components)
        angles = principal_angles(W, optimum)
        total = float(np.sum(X**2))
        return {
            "principal_angles_degrees": [float(angle) for angle in angles],
            "max_principal_angle_degrees": float(angles[-1]),
            "explained_variance_ratio": _kept(X, W) / total,
            "optimal_explained_variance_ratio": _kept(X, optimum) / total,
        }
    difference = trained - solution.theta
    figures: dict[str, float | list[float]] = {
        "theta_max_difference": float(np.max(np.abs(difference)))
    }
    scale = float(np.linalg.norm(solution.theta))
    if scale > 0:
        figures["theta_relative_difference"] = float(np.linalg.norm(difference)) / scale
    return figures


def _kept(X: FloatArray, W: FloatArray) -> float:
    """Return the sum of squares of X that the orthogonal projection onto span(W) keeps."""
    return float(np.sum((X @ orthonormal_basis(W)) ** 2))
