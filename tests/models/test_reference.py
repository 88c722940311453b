"""Tests for gradchain.models.reference: exact solutions on pooled rows and the comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from gradchain.data import load_split, split_rows
from gradchain.models import (
    PCA,
    LinearRegression,
    LogisticRegression,
    MatrixFactorisation,
    MultiLabel,
    StepSchedule,
    plaintext_distributed_gd,
)
from gradchain.models.reference import compare_with_pooled, solve_pooled


def regression_shards(providers: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    X = np.hstack([rng.normal(size=(90, 3)), np.ones((90, 1))])
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + rng.normal(scale=0.3, size=90)
    return [(X[i::providers], y[i::providers]) for i in range(providers)]


def test_least_squares_with_penalty_solves_normal_equations() -> None:
    shards = regression_shards()
    X = np.vstack([part for part, _ in shards])
    y = np.concatenate([labels for _, labels in shards])
    l2 = 0.5

    solution = solve_pooled(LinearRegression(), shards, l2=l2, parameters=4)

    # The mean over 3 providers plus l2 ||theta||^2 has the normal equations
    # (X^T X + 2 * 3 * l2 I) theta = X^T y.
    expected = np.linalg.solve(X.T @ X + 2 * 3 * l2 * np.eye(4), X.T @ y)
    assert solution is not None
    np.testing.assert_allclose(solution.theta, expected, rtol=1e-10)


def test_least_squares_is_where_gradient_descent_ends() -> None:
    shards = regression_shards()
    l2 = 0.5

    descent = plaintext_distributed_gd(
        shards, LinearRegression(), StepSchedule(kind="constant", learning_rate=0.01), l2, 2000, 0.0
    )
    solution = solve_pooled(LinearRegression(), shards, l2=l2, parameters=4)

    assert solution is not None
    np.testing.assert_allclose(descent.theta, solution.theta, rtol=0, atol=1e-9)


@pytest.mark.parametrize("l2", [0.001, 0.0])
def test_logistic_solution_has_zero_gradient(l2: float) -> None:
    split = load_split("breast-cancer", test_fraction=0.2, seed=0)
    model = LogisticRegression()
    shards = [(part.X, part.y) for part in split_rows(split.train, 4, seed=0)]
    # Without a penalty breast cancer is almost separable; use fewer columns so it is not.
    if l2 == 0.0:
        shards = [(X[:, [0, 1, 30]], y) for X, y in shards]

    solution = solve_pooled(model, shards, l2=l2, parameters=shards[0][0].shape[1])

    assert solution is not None
    assert solution.converged
    gradient = sum(model.gradient_sum(solution.theta, X, y) for X, y in shards)
    gradient = gradient + 2 * len(shards) * l2 * solution.theta
    np.testing.assert_allclose(gradient, 0.0, atol=1e-5)


def test_multilabel_solution_has_zero_gradient_per_label() -> None:
    split = load_split("digit-attributes", test_fraction=0.2, seed=0)
    model = MultiLabel()
    shards = [(part.X, part.y) for part in split_rows(split.train, 3, seed=0)]
    l2 = 0.01

    solution = solve_pooled(model, shards, l2=l2, parameters=3 * 65)

    assert solution is not None
    assert solution.theta.shape == (3 * 65,)
    gradient = sum(model.gradient_sum(solution.theta, X, y) for X, y in shards)
    gradient = gradient + 2 * len(shards) * l2 * solution.theta
    np.testing.assert_allclose(gradient, 0.0, atol=1e-4)


def test_pca_solution_spans_top_eigenvectors() -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2])
    shards = [(X[:100], np.zeros(100)), (X[100:], np.zeros(100))]
    model = PCA(components=2)

    solution = solve_pooled(model, shards, l2=0.0, parameters=10)

    _, vectors = np.linalg.eigh(X.T @ X)
    top = vectors[:, -2:]
    W = solution.theta.reshape(5, 2) if solution is not None else None
    assert W is not None
    # Both are orthonormal bases of one plane, so each projects onto the other exactly.
    np.testing.assert_allclose(top @ top.T @ W, W, atol=1e-10)


def test_pca_comparison_of_tilted_plane() -> None:
    X = np.diag([3.0, 2.0, 1.0])
    shards = [(X, np.zeros(3))]
    model = PCA(components=2)
    solution = solve_pooled(model, shards, l2=0.0, parameters=6)
    assert solution is not None
    # The plane spanned by e1 and (0, cos 30, sin 30): 30 degrees from the plane of e1 and e2.
    tilted = np.array([[1.0, 0.0], [0.0, np.cos(np.pi / 6)], [0.0, np.sin(np.pi / 6)]])

    comparison = compare_with_pooled(model, tilted.ravel(), solution, shards)

    np.testing.assert_allclose(comparison["principal_angles_degrees"], [0.0, 30.0], atol=1e-8)
    assert comparison["max_principal_angle_degrees"] == pytest.approx(30.0)
    # The optimum keeps 9 + 4 of 14. The tilted plane keeps 9 + 4 cos^2 30 + 1 sin^2 30 = 12.25.
    assert comparison["optimal_explained_variance_ratio"] == pytest.approx(13 / 14)
    assert comparison["explained_variance_ratio"] == pytest.approx(12.25 / 14)


def test_theta_comparison_figures() -> None:
    shards = regression_shards()
    solution = solve_pooled(LinearRegression(), shards, l2=0.0, parameters=4)
    assert solution is not None
    shifted = solution.theta + np.array([0.0, 0.3, 0.0, -0.4])

    comparison = compare_with_pooled(LinearRegression(), shifted, solution, shards)

    assert comparison["theta_max_difference"] == pytest.approx(0.4)
    assert comparison["theta_relative_difference"] == pytest.approx(
        0.5 / np.linalg.norm(solution.theta)
    )


def test_factorisation_without_penalty_has_no_solution() -> None:
    X = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    y = np.array([4.0, 3.0, 5.0])

    assert solve_pooled(MatrixFactorisation(rank=1), [(X, y)], l2=0.0, parameters=4) is None
