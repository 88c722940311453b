"""Tests for gradchain.models.training."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer  # type: ignore[import-untyped]
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

from gradchain.errors import ConfigError
from gradchain.models.logistic import LogisticRegression
from gradchain.models.training import (
    StepSchedule,
    plaintext_distributed_gd,
    randomised_direction,
    update,
)

MODEL = LogisticRegression()

Shard = tuple[np.ndarray, np.ndarray]


def random_shards(seed: int, sizes: list[int], features: int = 4) -> list[Shard]:
    rng = np.random.default_rng(seed)
    shards: list[Shard] = []
    for rows in sizes:
        X = rng.normal(size=(rows, features))
        y = rng.integers(0, 2, size=rows).astype(np.float64)
        shards.append((X, y))
    return shards


def pooled_gd_reference(
    X: np.ndarray, y: np.ndarray, learning_rate: float, l2: float, rounds: int, divisor: int
) -> np.ndarray:
    """Run gradient descent written out in full, dividing each gradient sum by ``divisor``."""
    theta = np.zeros(X.shape[1])
    for _ in range(rounds):
        gradient = MODEL.gradient_sum(theta, X, y) / divisor
        theta = theta - learning_rate * (gradient + 2 * l2 * theta)
    return theta


# Step schedules


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param("constant", [0.8, 0.8, 0.8], id="constant"),
        pytest.param("inverse_sqrt", [0.8, 0.565685424949238, 0.4], id="inverse-sqrt"),
        pytest.param("inverse_square", [0.8, 0.2, 0.05], id="inverse-square"),
    ],
)
def test_step_size_at_rounds_1_2_4(kind: str, expected: list[float]) -> None:
    schedule = StepSchedule(kind=kind, learning_rate=0.8)  # type: ignore[arg-type]

    for k, step_size in zip([1, 2, 4], expected, strict=True):
        assert schedule.step_size(k) == pytest.approx(step_size, rel=1e-14), f"k = {k}"


@pytest.mark.parametrize("k", [pytest.param(0, id="zero"), pytest.param(-1, id="negative")])
def test_step_size_rejects_round_below_one(k: int) -> None:
    schedule = StepSchedule(kind="constant", learning_rate=0.1)

    with pytest.raises(ValueError, match=rf"k must be >= 1 .* got {k}"):
        schedule.step_size(k)


def test_schedule_rejects_unknown_kind() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown step schedule 'linear', "
        r"expected one of: 'constant', 'inverse_sqrt', 'inverse_square'",
    ):
        StepSchedule(kind="linear", learning_rate=0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "learning_rate",
    [
        pytest.param(0.0, id="zero"),
        pytest.param(-0.1, id="negative"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="infinite"),
    ],
)
def test_schedule_rejects_invalid_learning_rate(learning_rate: float) -> None:
    with pytest.raises(ConfigError, match="learning_rate must be a finite number > 0"):
        StepSchedule(kind="constant", learning_rate=learning_rate)


# update


def test_update_hand_worked_example() -> None:
    # The gradient of one row x = (1, -1) with label 1 at theta = 0 is
    # (-0.5, 0.5). One step with eta = 1 and no penalty moves theta to (0.5, -0.5).
    schedule = StepSchedule(kind="constant", learning_rate=1.0)

    theta = update(np.zeros(2), np.array([-0.5, 0.5]), k=1, schedule=schedule, l2=0.0)

    np.testing.assert_allclose(theta, [0.5, -0.5], rtol=0, atol=1e-15)


def test_update_from_model_gradient() -> None:
    schedule = StepSchedule(kind="constant", learning_rate=1.0)
    direction = MODEL.gradient_sum(np.zeros(2), np.array([[1.0, -1.0]]), np.array([1.0]))

    theta = update(np.zeros(2), direction, k=1, schedule=schedule, l2=0.0)

    np.testing.assert_allclose(theta, [0.5, -0.5], rtol=0, atol=1e-15)


def test_update_applies_l2_gradient() -> None:
    # theta - 1 * (0 + 2 * 0.25 * theta) = theta / 2
    schedule = StepSchedule(kind="constant", learning_rate=1.0)

    theta = update(np.array([2.0, -4.0]), np.zeros(2), k=1, schedule=schedule, l2=0.25)

    np.testing.assert_allclose(theta, [1.0, -2.0], rtol=0, atol=1e-15)


def test_update_uses_step_size_of_round() -> None:
    # inverse_sqrt with eta0 = 2 gives eta_4 = 1, so
    # (1, 1) - 1 * ((0.5, -0.5) + 2 * 0.25 * (1, 1)) = (0, 1).
    schedule = StepSchedule(kind="inverse_sqrt", learning_rate=2.0)

    theta = update(np.ones(2), np.array([0.5, -0.5]), k=4, schedule=schedule, l2=0.25)

    np.testing.assert_allclose(theta, [0.0, 1.0], rtol=0, atol=1e-15)


def test_update_returns_new_array() -> None:
    schedule = StepSchedule(kind="constant", learning_rate=1.0)
    theta = np.array([1.0, 2.0])
    direction = np.array([0.5, 0.5])

    new_theta = update(theta, direction, k=1, schedule=schedule, l2=0.1)

    assert new_theta is not theta
    assert not np.shares_memory(new_theta, theta)
    np.testing.assert_array_equal(theta, [1.0, 2.0])
    np.testing.assert_array_equal(direction, [0.5, 0.5])


@pytest.mark.parametrize(
    ("theta", "direction", "message"),
    [
        pytest.param(np.zeros(2), np.zeros(3), r"direction must have shape \(2,\)", id="length"),
        pytest.param(np.zeros((2, 1)), np.zeros((2, 1)), "theta must be a 1-D vector", id="2d"),
        pytest.param(np.zeros(2), np.array([0.0, math.nan]), "direction contains NaN", id="nan"),
        pytest.param(np.array([math.inf, 0.0]), np.zeros(2), "theta contains NaN", id="inf"),
    ],
)
def test_update_rejects_invalid_vectors(
    theta: np.ndarray, direction: np.ndarray, message: str
) -> None:
    schedule = StepSchedule(kind="constant", learning_rate=1.0)

    with pytest.raises(ValueError, match=message):
        update(theta, direction, k=1, schedule=schedule, l2=0.0)


@pytest.mark.parametrize(
    "l2", [pytest.param(-0.1, id="negative"), pytest.param(math.nan, id="nan")]
)
def test_update_rejects_invalid_l2(l2: float) -> None:
    schedule = StepSchedule(kind="constant", learning_rate=1.0)

    with pytest.raises(ConfigError, match="l2 must be a finite number >= 0"):
        update(np.zeros(2), np.zeros(2), k=1, schedule=schedule, l2=l2)


def test_update_overflow_raises_config_error() -> None:
    schedule = StepSchedule(kind="constant", learning_rate=1e300)

    with pytest.raises(ConfigError, match=r"diverged in round 3: .*\(lower learning_rate or l2\)"):
        update(np.array([1e300, 0.0]), np.array([1e300, 0.0]), k=3, schedule=schedule, l2=0.0)


# randomised_direction


def test_randomised_direction_unit_scales_is_mean() -> None:
    gradients = [np.array([1.0, 2.0]), np.array([3.0, -2.0]), np.array([-1.0, 6.0])]

    direction = randomised_direction(gradients, [1.0, 1.0, 1.0])

    np.testing.assert_allclose(direction, [1.0, 2.0], rtol=0, atol=1e-15)


def test_randomised_direction_hand_worked_example() -> None:
    # (1 * (1, 0) + 0.5 * (0, 1)) / (1 + 0.5) = (2/3, 1/3)
    direction = randomised_direction([np.array([1.0, 0.0]), np.array([0.0, 1.0])], [1.0, 0.5])

    np.testing.assert_allclose(direction, [2 / 3, 1 / 3], rtol=1e-15)


def test_randomised_direction_expected_value_is_mean() -> None:
    # With a_i drawn independently from one distribution, the a_i are exchangeable,
    # so E[a_i / sum a_j] = 1 / N and E[(sum a_i g_i) / (sum a_i)] is the mean of the g_i.
    rng = np.random.default_rng(20240601)
    gradients = [
        np.array([4.0, -1.0, 0.5]),
        np.array([-2.0, 3.0, 0.5]),
        np.array([1.0, 1.0, -6.0]),
        np.array([0.0, -7.0, 2.0]),
    ]
    draws = 20_000

    samples = np.empty((draws, 3))
    for index in range(draws):
        scales = 1.0 - rng.uniform(size=len(gradients))  # uniform on (0, 1]
        samples[index] = randomised_direction(gradients, scales.tolist())

    expected = np.mean(gradients, axis=0)
    standard_error = samples.std(axis=0) / math.sqrt(draws)
    # The seed is fixed, so this is deterministic. Five standard errors (0.02 to
    # 0.04 here) is far below the gap of about 0.4 that dividing by N would cause.
    assert np.all(np.abs(samples.mean(axis=0) - expected) < 5 * standard_error)
    assert np.all(samples >= np.min(gradients, axis=0))
    assert np.all(samples <= np.max(gradients, axis=0))


@pytest.mark.parametrize(
    ("gradients", "scales", "message"),
    [
        pytest.param([], [], "gradients is empty", id="empty"),
        pytest.param([np.zeros(2)], [1.0, 1.0], "got 2 scales for 1 gradients", id="count"),
        pytest.param([np.zeros(2)], [0.0], r"scales\[0\] = 0\.0", id="scale-zero"),
        pytest.param([np.zeros(2)], [1.5], r"scales\[0\] = 1\.5", id="scale-above-one"),
        pytest.param([np.zeros(2)], [math.nan], r"scales\[0\] = nan", id="scale-nan"),
        pytest.param(
            [np.zeros(2), np.zeros(3)],
            [1.0, 1.0],
            r"gradients\[1\] has shape \(3,\), expected \(2,\)",
            id="shape",
        ),
        pytest.param([np.zeros((2, 2))], [1.0], "must be 1-D vectors", id="matrix"),
    ],
)
def test_randomised_direction_rejects_invalid_input(
    gradients: list[np.ndarray], scales: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        randomised_direction(gradients, scales)


# plaintext_distributed_gd


def test_one_shard_equals_pooled_gd() -> None:
    ((X, y),) = random_shards(seed=1, sizes=[30])
    schedule = StepSchedule(kind="constant", learning_rate=0.05)

    result = plaintext_distributed_gd([(X, y)], MODEL, schedule, l2=0.01, rounds=25, tolerance=0.0)

    expected = pooled_gd_reference(X, y, learning_rate=0.05, l2=0.01, rounds=25, divisor=1)
    np.testing.assert_allclose(result.theta, expected, rtol=1e-12, atol=1e-14)
    assert result.rounds_run == 25


def test_direction_is_mean_of_shard_gradients() -> None:
    shards = random_shards(seed=2, sizes=[5, 9, 3])
    X = np.vstack([shard[0] for shard in shards])
    y = np.concatenate([shard[1] for shard in shards])
    schedule = StepSchedule(kind="constant", learning_rate=0.1)

    result = plaintext_distributed_gd(shards, MODEL, schedule, l2=0.01, rounds=20, tolerance=0.0)

    # Gradient sums add over rows, so the mean over 3 shards is the pooled gradient sum / 3.
    expected = pooled_gd_reference(X, y, learning_rate=0.1, l2=0.01, rounds=20, divisor=3)
    np.testing.assert_allclose(result.theta, expected, rtol=1e-10, atol=1e-12)


def test_first_round_from_zero_by_hand() -> None:
    # At theta = 0 every prediction is 0.5, so shard i's gradient is X_i^T (0.5 - y_i).
    shards = random_shards(seed=3, sizes=[4, 6])
    schedule = StepSchedule(kind="constant", learning_rate=0.5)

    result = plaintext_distributed_gd(shards, MODEL, schedule, l2=0.3, rounds=1, tolerance=0.0)

    gradients = [X.T @ (0.5 - y) for X, y in shards]
    expected = -0.5 * (gradients[0] + gradients[1]) / 2
    np.testing.assert_allclose(result.theta, expected, rtol=1e-12, atol=1e-15)


def test_large_tolerance_stops_after_first_round() -> None:
    shards = random_shards(seed=4, sizes=[10, 10])
    schedule = StepSchedule(kind="constant", learning_rate=0.01)

    result = plaintext_distributed_gd(shards, MODEL, schedule, l2=0.0, rounds=50, tolerance=10.0)

    assert result.rounds_run == 1
    assert result.converged
    assert len(result.history) == 1


def test_zero_tolerance_runs_all_rounds() -> None:
    shards = random_shards(seed=4, sizes=[10, 10])
    schedule = StepSchedule(kind="constant", learning_rate=0.01)

    result = plaintext_distributed_gd(shards, MODEL, schedule, l2=0.0, rounds=7, tolerance=0.0)

    assert result.rounds_run == 7
    assert not result.converged
    assert [record["round"] for record in result.history] == [1, 2, 3, 4, 5, 6, 7]


def test_tolerance_stops_when_step_is_small() -> None:
    # inverse_square steps shrink fast, so the run converges well before 500 rounds.
    shards = random_shards(seed=5, sizes=[8, 8])
    schedule = StepSchedule(kind="inverse_square", learning_rate=0.5)

    result = plaintext_distributed_gd(shards, MODEL, schedule, l2=0.0, rounds=500, tolerance=1e-4)

    assert result.converged
    assert 1 < result.rounds_run < 500
    assert result.history[-1]["step_norm"] < 1e-4
    assert all(record["step_norm"] >= 1e-4 for record in result.history[:-1])


def test_history_step_norm_is_max_abs_change() -> None:
    shards = random_shards(seed=6, sizes=[6, 6])
    schedule = StepSchedule(kind="inverse_sqrt", learning_rate=0.3)

    first = plaintext_distributed_gd(shards, MODEL, schedule, l2=0.1, rounds=1, tolerance=0.0)
    second = plaintext_distributed_gd(shards, MODEL, schedule, l2=0.1, rounds=2, tolerance=0.0)

    # The run starts from theta = 0, so the first step norm is max |theta_1|.
    first_step = np.max(np.abs(first.theta))
    second_step = np.max(np.abs(second.theta - first.theta))
    assert second.history[0]["step_norm"] == pytest.approx(first_step, rel=1e-15)
    assert second.history[1]["step_norm"] == pytest.approx(second_step, rel=1e-12)
    assert second.history[1]["step_size"] == pytest.approx(0.3 / math.sqrt(2), rel=1e-15)


def test_history_without_evaluation_has_no_metrics() -> None:
    shards = random_shards(seed=7, sizes=[6])
    schedule = StepSchedule(kind="constant", learning_rate=0.1)

    result = plaintext_distributed_gd(shards, MODEL, schedule, l2=0.0, rounds=2, tolerance=0.0)

    assert set(result.history[0]) == {"round", "step_size", "step_norm"}


def test_history_with_evaluation_has_metrics() -> None:
    shards = random_shards(seed=8, sizes=[6, 6])
    ((X_eval, y_eval),) = random_shards(seed=9, sizes=[12])
    schedule = StepSchedule(kind="constant", learning_rate=0.1)

    result = plaintext_distributed_gd(
        shards, MODEL, schedule, l2=0.0, rounds=3, tolerance=0.0, evaluate_on=(X_eval, y_eval)
    )

    last = result.history[-1]
    assert set(last) == {"round", "step_size", "step_norm", "loss", "accuracy"}
    assert last["loss"] == MODEL.loss(result.theta, X_eval, y_eval)
    assert last["accuracy"] == MODEL.accuracy(result.theta, X_eval, y_eval)


def test_theta0_is_start_and_not_modified() -> None:
    shards = random_shards(seed=10, sizes=[5])
    schedule = StepSchedule(kind="constant", learning_rate=1.0)
    theta0 = np.array([0.5, -0.5, 1.0, 0.0])

    result = plaintext_distributed_gd(
        shards, MODEL, schedule, l2=0.0, rounds=1, tolerance=0.0, theta0=theta0
    )

    X, y = shards[0]
    expected = theta0 - MODEL.gradient_sum(theta0, X, y)
    np.testing.assert_allclose(result.theta, expected, rtol=1e-14)
    np.testing.assert_array_equal(theta0, [0.5, -0.5, 1.0, 0.0])


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        pytest.param({"shards": []}, ValueError, "shards is empty", id="no-shards"),
        pytest.param({"rounds": 0}, ConfigError, "rounds must be >= 1", id="zero-rounds"),
        pytest.param({"tolerance": -1.0}, ConfigError, "tolerance must be >= 0", id="tolerance"),
        pytest.param({"l2": -1.0}, ConfigError, "l2 must be a finite number", id="l2"),
        pytest.param(
            {"theta0": np.zeros(3)},
            ValueError,
            r"theta0 must have shape \(4,\) .* got shape \(3,\)",
            id="theta0-shape",
        ),
        pytest.param(
            {"shards": [(np.zeros(4), np.zeros(4))]},
            ValueError,
            r"X of shards\[0\] must be a 2-D array .* got shape \(4,\)",
            id="shard-X-1d",
        ),
        pytest.param(
            {"shards": [(np.zeros((2, 4)), np.zeros(2)), (np.zeros((2, 3)), np.zeros(2))]},
            ValueError,
            r"theta must have shape \(3,\) .* got shape \(4,\)",
            id="shard-columns",
        ),
    ],
)
def test_distributed_gd_rejects_invalid_arguments(
    overrides: dict[str, object], error: type[Exception], message: str
) -> None:
    arguments: dict[str, object] = {
        "shards": random_shards(seed=11, sizes=[3, 3]),
        "model": MODEL,
        "schedule": StepSchedule(kind="constant", learning_rate=0.1),
        "l2": 0.0,
        "rounds": 3,
        "tolerance": 0.0,
    }
    arguments.update(overrides)

    with pytest.raises(error, match=message):
        plaintext_distributed_gd(**arguments)  # type: ignore[arg-type]


# Breast cancer data


def breast_cancer_split(seed: int, shard_count: int) -> tuple[list[Shard], Shard]:
    """Split the data 80/20, standardise with training statistics, append an intercept column."""
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y.astype(np.float64), test_size=0.2, random_state=seed, stratify=y
    )
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)

    def prepare(features: np.ndarray) -> np.ndarray:
        return np.hstack([(features - mean) / std, np.ones((features.shape[0], 1))])

    X_train = prepare(X_train)
    X_test = prepare(X_test)
    order = np.random.default_rng(seed).permutation(X_train.shape[0])
    shards: list[Shard] = [
        (X_train[part], y_train[part]) for part in np.array_split(order, shard_count)
    ]
    return shards, (X_test, y_test)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_breast_cancer_12_shards_accuracy(seed: int) -> None:
    shards, (X_test, y_test) = breast_cancer_split(seed, shard_count=12)
    schedule = StepSchedule(kind="constant", learning_rate=0.05)

    result = plaintext_distributed_gd(
        shards,
        MODEL,
        schedule,
        l2=0.001,
        rounds=60,
        tolerance=1e-6,
        evaluate_on=(X_test, y_test),
    )

    assert result.history[-1]["accuracy"] >= 0.95
    assert result.history[-1]["loss"] < result.history[0]["loss"]
