"""Tests for gradchain.models.logistic."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from gradchain.models.logistic import LogisticRegression, sigmoid, validate_inputs

MODEL = LogisticRegression()


def random_problem(seed: int, rows: int = 7, features: int = 3) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    y = rng.integers(0, 2, size=rows).astype(np.float64)
    theta = rng.normal(scale=0.5, size=features)
    return theta, X, y


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_gradient_sum_matches_finite_difference(seed: int) -> None:
    theta, X, y = random_problem(seed)
    rows = X.shape[0]

    def summed_loss(point: np.ndarray) -> float:
        return float(rows * MODEL.loss(point, X, y))

    # Central differences have truncation error O(h**2) (about 1e-10 here) and
    # rounding error about 1e-16 * loss / h (about 1e-10), so 1e-7 leaves a wide margin.
    h = 1e-5
    numerical = np.empty_like(theta)
    for index in range(theta.size):
        offset = np.zeros_like(theta)
        offset[index] = h
        numerical[index] = (summed_loss(theta + offset) - summed_loss(theta - offset)) / (2 * h)

    np.testing.assert_allclose(MODEL.gradient_sum(theta, X, y), numerical, rtol=0, atol=1e-7)


def test_gradient_sum_hand_worked_example() -> None:
    # One row x = (1, -1) with label 1 at theta = 0: sigmoid(0) = 0.5, so the
    # gradient is (0.5 - 1) * (1, -1).
    gradient = MODEL.gradient_sum(np.zeros(2), np.array([[1.0, -1.0]]), np.array([1.0]))

    np.testing.assert_allclose(gradient, [-0.5, 0.5], rtol=0, atol=1e-15)


def test_gradient_sum_adds_over_rows() -> None:
    theta, X, y = random_problem(seed=5, rows=10)

    whole = MODEL.gradient_sum(theta, X, y)
    parts = MODEL.gradient_sum(theta, X[:4], y[:4]) + MODEL.gradient_sum(theta, X[4:], y[4:])

    np.testing.assert_allclose(whole, parts, rtol=1e-12, atol=1e-12)


def test_gradient_sum_of_zero_rows_is_zero() -> None:
    gradient = MODEL.gradient_sum(np.ones(3), np.empty((0, 3)), np.empty(0))

    np.testing.assert_array_equal(gradient, np.zeros(3))


@pytest.mark.parametrize(
    ("z", "expected"),
    [
        pytest.param(0.0, 0.5, id="zero"),
        pytest.param(1000.0, 1.0, id="large-positive"),
        pytest.param(-1000.0, 0.0, id="large-negative"),
        pytest.param(2.0, 0.8807970779778823, id="two"),
        pytest.param(-2.0, 0.11920292202211755, id="minus-two"),
    ],
)
def test_sigmoid_values_without_overflow(z: float, expected: float) -> None:
    # pytest turns numpy's overflow RuntimeWarning into an error, so a naive
    # 1 / (1 + exp(-z)) fails the large-negative case.
    assert sigmoid(np.array([z]))[0] == pytest.approx(expected, rel=1e-15, abs=1e-300)


def test_loss_at_zero_theta_is_log_two() -> None:
    theta, X, y = random_problem(seed=6)

    assert MODEL.loss(np.zeros_like(theta), X, y) == pytest.approx(0.6931471805599453, rel=1e-15)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        pytest.param(1.0, 0.0, id="confident-right"),
        pytest.param(0.0, 1000.0, id="confident-wrong"),
    ],
)
def test_loss_extreme_margin_is_finite(label: float, expected: float) -> None:
    # x . theta = 1000, so the prediction is label 1 with probability 1 - exp(-1000).
    loss = MODEL.loss(np.array([1000.0]), np.array([[1.0]]), np.array([label]))

    assert loss == pytest.approx(expected, abs=1e-12)


def test_loss_is_mean_over_rows() -> None:
    theta, X, y = random_problem(seed=7, rows=6)

    first = MODEL.loss(theta, X[:1], y[:1])
    rest = MODEL.loss(theta, X[1:], y[1:])

    assert MODEL.loss(theta, X, y) == pytest.approx((first + 5 * rest) / 6, rel=1e-12)


def test_predict_thresholds_at_zero_margin() -> None:
    theta = np.array([1.0, -1.0])
    X = np.array([[2.0, 1.0], [1.0, 2.0], [1.0, 1.0]])

    predictions = MODEL.predict(theta, X)

    assert predictions.tolist() == [1, 0, 1]
    assert predictions.dtype == np.int64


def test_accuracy_counts_matching_labels() -> None:
    theta = np.array([1.0, -1.0])
    X = np.array([[2.0, 1.0], [1.0, 2.0], [1.0, 1.0], [3.0, 0.0]])
    y = np.array([1.0, 1.0, 1.0, 0.0])

    assert MODEL.accuracy(theta, X, y) == 0.5


def test_evaluate_reports_loss_and_accuracy() -> None:
    theta, X, y = random_problem(seed=8)

    metrics = MODEL.evaluate(theta, X, y)

    assert set(metrics) == {"loss", "accuracy"}
    assert metrics["loss"] == MODEL.loss(theta, X, y)
    assert metrics["accuracy"] == MODEL.accuracy(theta, X, y)


@pytest.mark.parametrize(
    ("theta", "X", "y", "message"),
    [
        pytest.param(
            np.zeros(3), np.zeros(3), np.zeros(1), r"X must be a 2-D .* got shape \(3,\)", id="X-1d"
        ),
        pytest.param(
            np.zeros(2),
            np.zeros((4, 3)),
            np.zeros(4),
            r"theta must have shape \(3,\) .* got shape \(2,\)",
            id="theta-length",
        ),
        pytest.param(
            np.zeros((3, 1)),
            np.zeros((4, 3)),
            np.zeros(4),
            r"theta must have shape \(3,\) .* got shape \(3, 1\)",
            id="theta-column",
        ),
        pytest.param(
            np.zeros(3),
            np.zeros((4, 3)),
            np.zeros(5),
            r"y must have shape \(4,\) .* got shape \(5,\)",
            id="y-length",
        ),
        pytest.param(
            np.zeros(3),
            np.zeros((4, 3)),
            np.zeros((4, 1)),
            r"y must have shape \(4,\) .* got shape \(4, 1\)",
            id="y-column",
        ),
        pytest.param(
            np.zeros(3),
            np.zeros((3, 3)),
            np.array([0.0, -1.0, 1.0]),
            r"labels must be 0 or 1, got y\[1\] = -1\.0",
            id="label-minus-one",
        ),
        pytest.param(
            np.zeros(3),
            np.zeros((3, 3)),
            np.array([0.0, 1.0, 0.5]),
            r"labels must be 0 or 1, got y\[2\] = 0\.5",
            id="label-fraction",
        ),
    ],
)
def test_invalid_inputs_name_the_shapes(
    theta: np.ndarray, X: np.ndarray, y: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        validate_inputs(theta, X, y)
    with pytest.raises(ValueError, match=message):
        MODEL.gradient_sum(theta, X, y)
    with pytest.raises(ValueError, match=message):
        MODEL.evaluate(theta, X, y)


def test_predict_rejects_mismatched_theta() -> None:
    with pytest.raises(ValueError, match=r"theta must have shape \(2,\) .* got shape \(3,\)"):
        MODEL.predict(np.zeros(3), np.zeros((4, 2)))


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(MODEL.loss, id="loss"),
        pytest.param(MODEL.accuracy, id="accuracy"),
    ],
)
def test_metrics_reject_zero_rows(method: Callable[..., float]) -> None:
    with pytest.raises(ValueError, match="zero rows"):
        method(np.zeros(2), np.empty((0, 2)), np.empty(0))
