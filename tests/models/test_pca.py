"""Tests for gradchain.models.pca: the reconstruction-error gradient and the digits subspace."""

from __future__ import annotations

import numpy as np
import pytest

from gradchain.data import load_split, split_rows
from gradchain.models import StepSchedule, initial_theta, plaintext_distributed_gd
from gradchain.models.pca import PCA, orthonormal_basis, principal_angles, top_components
from tests.models.helpers import central_difference


def random_problem(
    seed: int, rows: int = 12, columns: int = 5, components: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, columns))
    theta = rng.normal(size=columns * components)
    return theta, X, np.zeros(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_sum_matches_finite_difference(seed: int) -> None:
    model = PCA(components=2)
    theta, X, y = random_problem(seed)

    def half_reconstruction_error(point: np.ndarray) -> float:
        return float(0.5 * X.shape[0] * model.loss(point, X, y))

    # The error is a quartic polynomial in theta. With h = 1e-5 the truncation
    # error is about 1e-10 times the fourth derivatives, far below 1e-6.
    numerical = central_difference(half_reconstruction_error, theta)

    np.testing.assert_allclose(model.gradient_sum(theta, X, y), numerical, rtol=1e-6, atol=1e-6)


def test_gradient_sum_adds_over_rows() -> None:
    model = PCA(components=2)
    theta, X, y = random_problem(seed=3, rows=20)

    whole = model.gradient_sum(theta, X, y)
    parts = model.gradient_sum(theta, X[:8], y[:8]) + model.gradient_sum(theta, X[8:], y[8:])

    np.testing.assert_allclose(whole, parts, rtol=1e-12, atol=1e-12)


def test_gradient_zero_at_principal_subspace() -> None:
    model = PCA(components=2)
    _, X, y = random_problem(seed=4, rows=50)
    reference, _ = top_components(X, 2)

    gradient = model.gradient_sum(reference.ravel(), X, y)

    np.testing.assert_allclose(gradient, 0.0, atol=1e-10)


def test_gradient_rejects_zero_projection() -> None:
    _, X, y = random_problem(seed=5)

    with pytest.raises(ValueError, match="W is all zeros"):
        PCA(components=2).gradient_sum(np.zeros(10), X, y)


def test_gradient_reports_divergence() -> None:
    _, X, y = random_problem(seed=6)

    with pytest.raises(ValueError, match="gradient descent has diverged"):
        PCA(components=2).gradient_sum(np.full(10, 1e120), X, y)


def test_initial_theta_is_orthonormal() -> None:
    model = PCA(components=3, seed=7)

    theta = initial_theta(model, 24)
    W = theta.reshape(8, 3)

    np.testing.assert_allclose(W.T @ W, np.eye(3), atol=1e-12)
    np.testing.assert_array_equal(theta, initial_theta(PCA(components=3, seed=7), 24))


def test_initial_theta_rejects_bad_count() -> None:
    with pytest.raises(ValueError, match="do not form a d x 3 projection"):
        PCA(components=3).initial_theta(25)


def test_principal_angles_known_planes() -> None:
    # The x-y plane against the plane spanned by x and (y + z) / sqrt(2): angles 0 and 45 degrees.
    A = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    B = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])

    np.testing.assert_allclose(principal_angles(A, B), [0.0, 45.0], atol=1e-6)


def test_orthonormal_basis_rejects_dependent_columns() -> None:
    with pytest.raises(ValueError, match="linearly dependent"):
        orthonormal_basis(np.array([[1.0, 2.0], [1.0, 2.0]]))


def test_evaluate_at_svd_subspace() -> None:
    model = PCA(components=2)
    _, X, y = random_problem(seed=8, rows=40)
    reference, ratio = top_components(X, 2)
    # A rotation within the subspace spans the same subspace.
    rotation = np.array([[0.6, -0.8], [0.8, 0.6]])

    metrics = model.evaluate((reference @ rotation).ravel(), X, y)

    assert metrics["max_principal_angle_degrees"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["explained_variance_ratio"] == pytest.approx(ratio)
    assert metrics["svd_explained_variance_ratio"] == pytest.approx(ratio)
    assert metrics["loss"] == pytest.approx(np.mean(np.sum(X**2, axis=1)) * (1 - ratio))


def test_check_data_parameter_count() -> None:
    model = PCA(components=4)
    X = np.zeros((3, 64))

    model.check_data(X, np.zeros(3), 256)
    with pytest.raises(
        ValueError, match=r"64 feature columns with 4 components need job.features = 256"
    ):
        model.check_data(X, np.zeros(3), 64)


def test_digits_subspace_matches_svd() -> None:
    components = 4
    split = load_split("digits", test_fraction=0.2, seed=0)
    providers = split_rows(split.train, 10, seed=0)
    shards = [(part.X, part.y) for part in providers]
    model = PCA(components=components)

    result = plaintext_distributed_gd(
        shards, model, StepSchedule(kind="constant", learning_rate=0.005), 0.0, 100, 0.0
    )

    pooled = np.vstack([X for X, _ in shards])
    metrics = model.evaluate(result.theta, pooled, np.zeros(pooled.shape[0]))
    # Measured: 0.006 degrees and a ratio equal to numpy's SVD (0.4870) to 4 decimals.
    assert metrics["max_principal_angle_degrees"] < 1.0
    assert metrics["explained_variance_ratio"] == pytest.approx(
        metrics["svd_explained_variance_ratio"], abs=1e-4
    )
    assert result.theta.shape == (64 * components,)
