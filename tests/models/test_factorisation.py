"""Tests for gradchain.models.factorisation: local user solves, item gradients and MovieLens."""

from __future__ import annotations

import numpy as np
import pytest

from gradchain.data import load_split, split_groups
from gradchain.errors import ConfigError
from gradchain.models import (
    FactorisationState,
    MatrixFactorisation,
    StepSchedule,
    alternating_least_squares,
    create_local_state,
    plaintext_distributed_gd,
    provider_gradient,
)
from tests.models.helpers import central_difference, movielens_folder

ITEMS = 6


def ratings(seed: int, users: list[int], per_user: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Return rows (user, item, held_out = 0) and ratings 1-5 for the given users."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in users:
        for item in rng.choice(ITEMS, size=per_user, replace=False):
            rows.append([user, item, 0.0])
    X = np.array(rows, dtype=np.float64)
    return X, np.asarray(rng.integers(1, 6, size=X.shape[0]), dtype=np.float64)


def start(model: MatrixFactorisation, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(scale=0.5, size=ITEMS * model.width)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_sum_matches_finite_difference(seed: int) -> None:
    model = MatrixFactorisation(rank=2, user_l2=0.5)
    X, y = ratings(seed, users=[0, 1, 2])
    theta = start(model, seed)

    numerical = central_difference(lambda point: model.objective(point, X, y), theta)

    # The user solves are exact, so the envelope theorem makes the gradient exact too.
    np.testing.assert_allclose(model.gradient_sum(theta, X, y), numerical, rtol=1e-6, atol=1e-6)


def test_gradients_of_disjoint_users_add_up() -> None:
    model = MatrixFactorisation(rank=2)
    X1, y1 = ratings(3, users=[0, 1])
    X2, y2 = ratings(4, users=[2, 3, 4])
    theta = start(model)

    whole = model.gradient_sum(theta, np.vstack([X1, X2]), np.concatenate([y1, y2]))
    parts = model.gradient_sum(theta, X1, y1) + model.gradient_sum(theta, X2, y2)

    np.testing.assert_allclose(whole, parts, rtol=1e-12, atol=1e-12)


def test_held_out_rows_do_not_train() -> None:
    model = MatrixFactorisation(rank=2)
    X, y = ratings(5, users=[0, 1])
    theta = start(model)
    extra = np.array([[0.0, 5.0, 1.0], [1.0, 4.0, 1.0]])

    with_held_out = model.gradient_sum(theta, np.vstack([X, extra]), np.append(y, [5.0, 1.0]))

    np.testing.assert_array_equal(with_held_out, model.gradient_sum(theta, X, y))


def test_state_keeps_user_factors() -> None:
    model = MatrixFactorisation(rank=2)
    X, y = ratings(6, users=[4, 1, 9])
    theta = start(model)
    state = create_local_state(model, X, y)

    assert isinstance(state, FactorisationState)
    assert state.user_factors is None
    gradient = provider_gradient(model, theta, X, y, state)

    np.testing.assert_array_equal(gradient, model.gradient_sum(theta, X, y))
    np.testing.assert_array_equal(state.user_ids, [1, 4, 9])
    assert state.user_factors is not None
    assert state.user_factors.shape == (3, model.width)


def test_user_factors_solve_ridge_regression() -> None:
    model = MatrixFactorisation(rank=2, user_l2=0.7)
    X, y = ratings(7, users=[3])
    theta = start(model)
    state = model.create_state(X, y)
    model.gradient_sum(theta, X, y, state)

    V = theta.reshape(ITEMS, model.width)
    items = X[:, 1].astype(int)
    design = np.hstack([V[items, :2], np.ones((items.size, 1))])
    expected = np.linalg.solve(design.T @ design + 0.7 * np.eye(3), design.T @ (y - V[items, 2]))
    assert state.user_factors is not None
    np.testing.assert_allclose(state.user_factors[0], expected, rtol=1e-10)


def test_state_for_other_rows_rejected() -> None:
    model = MatrixFactorisation(rank=2)
    X, y = ratings(8, users=[0, 1])
    state = model.create_state(X[:3], y[:3])

    with pytest.raises(ValueError, match="state was created for 3 rows"):
        model.gradient_sum(start(model), X, y, state)


def test_zero_item_factors_rejected() -> None:
    model = MatrixFactorisation(rank=2)
    X, y = ratings(9, users=[0])

    with pytest.raises(ValueError, match="item factors in theta are all zeros"):
        model.gradient_sum(np.zeros(ITEMS * model.width), X, y)


def test_initial_theta_zero_biases() -> None:
    model = MatrixFactorisation(rank=3, init_scale=0.2, seed=4)

    V = model.initial_theta(400 * model.width).reshape(400, model.width)

    np.testing.assert_array_equal(V[:, 3], 0.0)
    assert np.std(V[:, :3]) == pytest.approx(0.2, rel=0.1)
    np.testing.assert_array_equal(V.ravel(), model.initial_theta(400 * model.width))


def test_evaluate_scores_held_out_rows() -> None:
    model = MatrixFactorisation(rank=1, user_l2=1.0)
    # Items 0 and 1 with factors 1 and 2 and biases 0.5 and -0.5.
    theta = np.array([1.0, 0.5, 2.0, -0.5])
    # User 0 rates item 0 (fold-in) and item 1 (scored). User 1 has only a scored rating.
    X = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    y = np.array([3.0, 4.0, 2.0])

    # User 0: minimise (p + c + 0.5 - 3)^2 + p^2 + c^2, so p = c = 2.5 / 3.
    user = 2.5 / 3
    predictions = np.array([2 * user + user - 0.5, -0.5])
    expected = float(np.mean((predictions - [4.0, 2.0]) ** 2))

    metrics = model.evaluate(theta, X, y)

    assert metrics["loss"] == pytest.approx(expected)
    assert metrics["rmse"] == pytest.approx(np.sqrt(expected))


def test_evaluate_needs_held_out_rows() -> None:
    model = MatrixFactorisation(rank=2)
    X, y = ratings(10, users=[0])

    with pytest.raises(ValueError, match="no row has held_out = 1"):
        model.evaluate(start(model), X, y)


@pytest.mark.parametrize(
    ("X", "message"),
    [
        pytest.param(np.array([[0.0, 1.0]]), "ratings need 3 columns", id="columns"),
        pytest.param(np.array([[0.5, 1.0, 0.0]]), "ids must be integers >= 0", id="fraction"),
        pytest.param(np.array([[-1.0, 1.0, 0.0]]), "ids must be integers >= 0", id="negative"),
        pytest.param(np.array([[0.0, 1.0, 2.0]]), "held_out must be 0 or 1", id="flag"),
        pytest.param(np.array([[0.0, 9.0, 0.0]]), "item id 9 does not fit", id="item"),
    ],
)
def test_check_data_rejects_invalid_rows(X: np.ndarray, message: str) -> None:
    model = MatrixFactorisation(rank=2)

    with pytest.raises(ValueError, match=message):
        model.check_data(X, np.ones(X.shape[0]), ITEMS * model.width)


def test_check_data_rejects_partial_item() -> None:
    model = MatrixFactorisation(rank=2)

    with pytest.raises(ValueError, match=r"job.features must be items x 3 for rank 2"):
        model.check_data(np.array([[0.0, 1.0, 0.0]]), np.ones(1), 10)


def test_parameter_count_covers_largest_item() -> None:
    model = MatrixFactorisation(rank=4)

    count = model.parameter_count(np.array([[0.0, 7.0, 0.0], [1.0, 2.0, 1.0]]), np.ones(2))

    assert count == 8 * 5


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"rank": 0}, "rank must be at least 1", id="rank"),
        pytest.param({"user_l2": 0.0}, "user_l2 must be a finite number > 0", id="user-l2"),
        pytest.param({"init_scale": -1.0}, "init_scale must be a finite number > 0", id="scale"),
    ],
)
def test_invalid_settings_rejected(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MatrixFactorisation(**settings)  # type: ignore[arg-type]


def test_movielens_rmse_matches_pooled_als() -> None:
    folder = movielens_folder()
    split = load_split("movielens", path=folder, test_fraction=0.1, seed=0)
    providers = 20
    assert split.train_groups is not None
    parts = split_groups(split.train, split.train_groups, providers, seed=0)
    shards = [(part.X, part.y) for part in parts]
    model = MatrixFactorisation(rank=8, user_l2=5.0)
    items = 1682
    l2 = 0.3

    result = plaintext_distributed_gd(
        shards,
        model,
        StepSchedule(kind="constant", learning_rate=0.05),
        l2,
        150,
        0.0,
        parameters=items * model.width,
    )
    # The learner's l2 * ||theta||^2 added to the mean over providers equals
    # item_l2 = 2 * providers * l2 on the pooled sum.
    pooled = alternating_least_squares(
        split.train.X, split.train.y, model=model, items=items, item_l2=2 * providers * l2
    )

    distributed = model.evaluate(result.theta, split.test.X, split.test.y)["rmse"]
    reference = model.evaluate(pooled, split.test.X, split.test.y)["rmse"]
    # Measured: 0.9293 against 0.9290 on the ratings held out from 94 users the
    # learner folds in. Predicting the mean training rating gives about 1.12.
    assert abs(distributed - reference) < 0.01
    assert reference < 0.95
