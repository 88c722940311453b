"""Tests for gradchain.models.linear: squared-error regression and outlier flags."""

from __future__ import annotations

import numpy as np
import pytest

from gradchain.data import Dataset, split_rows
from gradchain.errors import ConfigError
from gradchain.models import StepSchedule, get_model, plaintext_distributed_gd
from gradchain.models.interface import count_flagged_rows, flags_rows
from gradchain.models.linear import LinearRegression, flag_outliers, robust_threshold
from tests.models.helpers import central_difference

MODEL = LinearRegression()


def random_problem(seed: int, rows: int = 9, features: int = 4) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    y = rng.normal(size=rows)
    theta = rng.normal(size=features)
    return theta, X, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_sum_matches_finite_difference(seed: int) -> None:
    theta, X, y = random_problem(seed)

    def half_squared_error(point: np.ndarray) -> float:
        return float(0.5 * X.shape[0] * MODEL.loss(point, X, y))

    # The objective is quadratic, so central differences are exact up to rounding.
    numerical = central_difference(half_squared_error, theta)

    np.testing.assert_allclose(MODEL.gradient_sum(theta, X, y), numerical, rtol=0, atol=1e-7)


def test_gradient_sum_adds_over_rows() -> None:
    theta, X, y = random_problem(seed=3, rows=12)

    whole = MODEL.gradient_sum(theta, X, y)
    parts = MODEL.gradient_sum(theta, X[:5], y[:5]) + MODEL.gradient_sum(theta, X[5:], y[5:])

    np.testing.assert_allclose(whole, parts, rtol=1e-12, atol=1e-12)


def test_evaluate_hand_worked_example() -> None:
    # Predictions 1 and 4 against labels 2 and 2: residuals -1 and 2.
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    theta = np.array([1.0, 2.0])
    y = np.array([2.0, 2.0])

    metrics = MODEL.evaluate(theta, X, y)

    assert metrics == {"loss": 2.5, "mae": 1.5}


def test_evaluate_rejects_zero_rows() -> None:
    with pytest.raises(ValueError, match="zero rows"):
        MODEL.evaluate(np.zeros(2), np.zeros((0, 2)), np.zeros(0))


def test_theta_shape_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match=r"theta must have shape \(3,\)"):
        MODEL.gradient_sum(np.zeros(2), np.zeros((4, 3)), np.zeros(4))


def test_distributed_gd_reaches_least_squares() -> None:
    rng = np.random.default_rng(4)
    X = np.hstack([rng.normal(size=(300, 3)), np.ones((300, 1))])
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + rng.normal(scale=0.1, size=300)
    data = Dataset(X=X, y=y, feature_names=("a", "b", "c", "intercept"), name="synthetic")
    shards = [(part.X, part.y) for part in split_rows(data, 6, seed=0)]

    result = plaintext_distributed_gd(
        shards, MODEL, StepSchedule(kind="constant", learning_rate=0.01), 0.0, 300, 0.0
    )

    expected = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(result.theta, expected, rtol=0, atol=1e-8)


def planted_outliers() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return X, y, the true theta and the indices of 6 rows whose labels are shifted by 8 to 12."""
    rng = np.random.default_rng(7)
    X = np.hstack([rng.normal(size=(200, 2)), np.ones((200, 1))])
    theta = np.array([2.0, -1.0, 0.5])
    y = X @ theta + rng.normal(scale=0.5, size=200)
    outliers = rng.choice(200, size=6, replace=False)
    y[outliers] += rng.choice([-1.0, 1.0], size=6) * rng.uniform(8.0, 12.0, size=6)
    return X, y, theta, np.sort(outliers)


def test_providers_flag_planted_outliers() -> None:
    X, y, _, outliers = planted_outliers()
    data = Dataset(X=X, y=y, feature_names=("a", "b", "intercept"), name="planted")
    providers = split_rows(data, 4, seed=1)
    shards = [(part.X, part.y) for part in providers]
    trained = plaintext_distributed_gd(
        shards, MODEL, StepSchedule(kind="constant", learning_rate=0.01), 0.0, 300, 0.0
    ).theta

    # The noise has standard deviation 0.5 and the outliers are shifted by at least 8, so a
    # threshold of 4 lies far from both. Each provider checks only its own rows.
    flagged_rows = [
        part.X[flag_outliers(trained, part.X, part.y, threshold=4.0)] for part in providers
    ]

    flagged = np.vstack(flagged_rows)
    planted = X[outliers]
    assert flagged.shape == planted.shape
    np.testing.assert_array_equal(flagged[np.lexsort(flagged.T)], planted[np.lexsort(planted.T)])


def test_flag_outliers_uses_strict_threshold() -> None:
    X = np.array([[1.0], [1.0], [1.0]])
    y = np.array([0.0, 2.0, 3.5])

    flags = flag_outliers(np.array([1.0]), X, y, threshold=1.0)

    np.testing.assert_array_equal(flags, [False, False, True])


@pytest.mark.parametrize("threshold", [-1.0, float("nan"), float("inf")])
def test_flag_outliers_rejects_invalid_threshold(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0"):
        flag_outliers(np.zeros(1), np.ones((1, 1)), np.zeros(1), threshold)


def test_robust_threshold_ignores_huge_residual() -> None:
    # Median 0.5. The absolute deviations 2.5, 1.5, 0.5, 0.5, 1.5 and 499.5 have median 1.5.
    residuals = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 500.0])

    assert robust_threshold(residuals, scale=1.0) == pytest.approx(1.4826 * 1.5)


def test_robust_threshold_rejects_empty() -> None:
    with pytest.raises(ValueError, match="residuals is empty"):
        robust_threshold([])


def test_target_mae_squares_back() -> None:
    X = np.array([[1.0], [1.0], [1.0]])
    y = np.array([2.0, 3.0, 1.0])  # targets 4, 9 and 1
    # Predictions x . theta = 2.5 for every row, so the predicted target is 6.25.
    model = LinearRegression(label_power=2)

    metrics = model.evaluate(np.array([2.5]), X, y)

    assert metrics["mae"] == pytest.approx((0.5 + 0.5 + 1.5) / 3)
    assert metrics["target_mae"] == pytest.approx((2.25 + 2.75 + 5.25) / 3)


def test_target_mae_counts_negative_prediction_as_zero() -> None:
    model = LinearRegression(label_power=2)

    metrics = model.evaluate(np.array([-1.0]), np.array([[1.0]]), np.array([2.0]))

    assert metrics["target_mae"] == pytest.approx(4.0)


def test_label_power_one_has_no_target_mae() -> None:
    assert "target_mae" not in MODEL.evaluate(np.zeros(1), np.ones((2, 1)), np.zeros(2))


def test_flag_rows_with_absolute_threshold() -> None:
    X, y, theta, outliers = planted_outliers()
    model = get_model("linear", {"outlier_threshold": 4.0})

    flags = model.flag_rows(theta, X, y)  # type: ignore[attr-defined]

    np.testing.assert_array_equal(np.flatnonzero(flags), outliers)
    assert count_flagged_rows(model, theta, X, y) == len(outliers)


def test_flag_rows_with_mad_scale() -> None:
    X, y, theta, outliers = planted_outliers()
    model = get_model("linear", {"outlier_mad_scale": 3.5})
    residuals = X @ theta - y
    deviation = np.median(np.abs(residuals - np.median(residuals)))

    flags = model.flag_rows(theta, X, y)  # type: ignore[attr-defined]

    # The noise has standard deviation 0.5, so 3.5 robust deviations are about 1.75,
    # far below the shifts of 8 to 12.
    np.testing.assert_array_equal(flags, np.abs(residuals) > 3.5 * 1.4826 * deviation)
    np.testing.assert_array_equal(np.flatnonzero(flags), outliers)


def test_flagging_off_by_default() -> None:
    assert not flags_rows(MODEL)
    with pytest.raises(ValueError, match="not configured to flag rows"):
        count_flagged_rows(MODEL, np.zeros(1), np.ones((1, 1)), np.zeros(1))


def test_both_outlier_settings_rejected() -> None:
    with pytest.raises(ConfigError, match="Set one of them and leave the other at 0"):
        get_model("linear", {"outlier_threshold": 1.0, "outlier_mad_scale": 3.0})


def test_mad_scale_threshold_by_hand() -> None:
    X = np.ones((7, 1))
    y = np.array([0.0, 0.0, 0.0, 1.0, -1.0, 2.5, 10.0])
    # With theta = 0 the residuals are -y: median 0, median absolute deviation 1, so the
    # robust standard deviation is 1.4826 and 1.5 of them are 2.2239. Only |-2.5| and
    # |-10| exceed it.
    model = get_model("linear", {"outlier_mad_scale": 1.5})

    flags = model.flag_rows(np.zeros(1), X, y)  # type: ignore[attr-defined]

    np.testing.assert_array_equal(np.flatnonzero(flags), [5, 6])
