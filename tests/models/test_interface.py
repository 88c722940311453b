"""Tests for gradchain.models.interface: the defaults for models without optional methods."""

from __future__ import annotations

import numpy as np
import pytest

from gradchain.models import (
    PCA,
    LinearRegression,
    LogisticRegression,
    MatrixFactorisation,
    check_model_data,
    create_local_state,
    initial_theta,
    parameter_count,
    provider_gradient,
)


def test_stateless_defaults() -> None:
    model = LogisticRegression()
    X = np.array([[1.0, -1.0], [0.5, 2.0]])
    y = np.array([1.0, 0.0])
    theta = np.array([0.1, -0.2])

    np.testing.assert_array_equal(initial_theta(model, 2), [0.0, 0.0])
    assert parameter_count(model, X, y) == 2
    assert create_local_state(model, X, y) is None
    np.testing.assert_array_equal(
        provider_gradient(model, theta, X, y, None), model.gradient_sum(theta, X, y)
    )
    # Models without check_data are left to the caller's column check.
    check_model_data(model, X, y, 99)


def test_initial_theta_uses_model_start() -> None:
    np.testing.assert_array_equal(
        initial_theta(PCA(components=2, seed=1), 8), PCA(2, 1).initial_theta(8)
    )


def test_initial_theta_rejects_wrong_length() -> None:
    class Broken(LinearRegression):
        def initial_theta(self, parameters: int) -> np.ndarray:
            return np.zeros(parameters + 1)

    with pytest.raises(
        ValueError, match=r"Broken.initial_theta returned shape \(4,\), expected \(3,\)"
    ):
        initial_theta(Broken(), 3)


def test_parameter_count_uses_model_count() -> None:
    X = np.array([[0.0, 4.0, 0.0]])

    assert parameter_count(MatrixFactorisation(rank=2), X, np.ones(1)) == 5 * 3


def test_check_model_data_calls_model() -> None:
    with pytest.raises(ValueError, match=r"need job\.features = 6"):
        check_model_data(PCA(components=2), np.zeros((2, 3)), np.zeros(2), 5)
