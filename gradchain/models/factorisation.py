"""Matrix factorisation for ratings, with user factors that never leave their provider.

A rating r of user u for item j is predicted as

    r_hat = p_u . q_j + c_u + b_j

with a user factor p_u and user bias c_u (rank + 1 numbers per user) and an
item factor q_j and item bias b_j (rank + 1 numbers per item). theta holds
only the item parameters, as an items x (rank + 1) matrix [q_j, b_j]
flattened row by row. Each provider stores all ratings of its users and their
user parameters, which it computes itself and never sends.

Every round a provider solves, for each of its users, the ridge regression

    min over (p_u, c_u) of 1/2 * sum over u's ratings of (r_hat - r)^2
                          + user_l2 / 2 * ||(p_u, c_u)||^2

against the current item parameters, then returns the gradient of
1/2 * sum of (r_hat - r)^2 with respect to the item parameters. Because the
user parameters minimise the objective, this is also the gradient of the
objective minimised over the user parameters (the envelope theorem), so the
learner's gradient descent runs on a function of theta alone. The gradients
of different providers add up only when every user's ratings sit at one
provider, which the model cannot check.

Data files have three columns: user id, item id (0 <= id < items) and a
``held_out`` flag. Rows with held_out = 1 are never trained on.
:meth:`MatrixFactorisation.evaluate` fits each user's parameters to the
user's held_out = 0 rows and scores the held_out = 1 rows, so the learner can
evaluate on users of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gradchain.errors import ConfigError
from gradchain.models._arrays import as_matrix, as_targets

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

DATA_COLUMNS = ("user", "item", "held_out")
"""Columns of a ratings data file. The label is the rating."""

_CHUNK_ROWS = 8192  # rows per block of the per-user Gram matrices, to bound memory


@dataclass(frozen=True, kw_only=True)
class _Ratings:
    """Rows of a ratings file sorted by user, with the offsets of each user's block."""

    users: IntArray
    items: IntArray
    ratings: FloatArray
    user_ids: IntArray
    """Distinct user ids, ascending."""
    starts: IntArray
    """Index of each user's first row."""


def _validate_columns(X: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    X_array = as_matrix(X)
    if X_array.shape[1] != len(DATA_COLUMNS):
        raise ValueError(
            f"ratings need {len(DATA_COLUMNS)} columns ({', '.join(DATA_COLUMNS)}), "
            f"got {X_array.shape[1]}"
        )
    y_array = as_targets(y, X_array.shape[0])
    ids = X_array[:, :2]
    if not np.all(np.isfinite(ids)) or np.any(ids < 0) or np.any(ids != np.round(ids)):
        row = int(np.flatnonzero(~np.all((ids >= 0) & (ids == np.round(ids)), axis=1))[0])
        raise ValueError(
            f"user and item ids must be integers >= 0, got {X_array[row, :2].tolist()} "
            f"in row {row + 1} (counting from 1)"
        )
    flags = X_array[:, 2]
    if np.any((flags != 0.0) & (flags != 1.0)):
        row = int(np.flatnonzero((flags != 0.0) & (flags != 1.0))[0])
        raise ValueError(f"held_out must be 0 or 1, got {flags[row]} in row {row + 1}")
    if not np.all(np.isfinite(y_array)):
        raise ValueError("ratings contain NaN or infinite values")
    return X_array, y_array


def _group(X: FloatArray, y: FloatArray, held_out: bool) -> _Ratings:
    rows = np.flatnonzero(X[:, 2] == float(held_out))
    users = X[rows, 0].astype(np.intp)
    order = rows[np.argsort(users, kind="stable")]
    sorted_users = X[order, 0].astype(np.intp)
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_users[1:] != sorted_users[:-1]
    starts = np.flatnonzero(first).astype(np.intp)
    return _Ratings(
        users=sorted_users,
        items=X[order, 1].astype(np.intp),
        ratings=y[order],
        user_ids=sorted_users[starts],
        starts=starts,
    )


@dataclass(kw_only=True, eq=False)
class FactorisationState:
    """A provider's training ratings grouped by user, and its latest user parameters.

    Created once per provider by :meth:`MatrixFactorisation.create_state`.
    ``user_factors`` has one row [p_u, c_u] per entry of ``user_ids`` and is
    None until the first round. It is the user's part of the model, which
    the provider can use to rank items for its users after training.
    """

    rows: int
    ratings: _Ratings
    user_factors: FloatArray | None = field(default=None)

    @property
    def user_ids(self) -> IntArray:
        """Distinct user ids of the training rows, ascending."""
        return self.ratings.user_ids


class MatrixFactorisation:
    """Ratings model r_hat = p_u . q_j + c_u + b_j whose theta holds only the item parameters.

    ``rank`` is the length of p_u and q_j, ``user_l2`` the ridge penalty of
    the user parameters, and ``init_scale`` and ``seed`` set the random
    item factors of :meth:`initial_theta`.
    """

    def __init__(
        self, rank: int = 8, user_l2: float = 5.0, init_scale: float = 0.1, seed: int = 0
    ) -> None:
        if rank < 1:
            raise ConfigError(f"rank must be at least 1, got {rank}")
        if not (np.isfinite(user_l2) and user_l2 > 0):
            raise ConfigError(
                f"user_l2 must be a finite number > 0, which keeps every user's ridge "
                f"regression solvable, got {user_l2!r}"
            )
        if not (np.isfinite(init_scale) and init_scale > 0):
            raise ConfigError(f"init_scale must be a finite number > 0, got {init_scale!r}")
        self.rank = rank
        self.user_l2 = float(user_l2)
        self.init_scale = float(init_scale)
        self.seed = seed

    @property
    def width(self) -> int:
        """Parameters per item or user: rank factors and one bias."""
        return self.rank + 1

    def _item_matrix(self, theta: npt.ArrayLike) -> FloatArray:
        theta_array = np.asarray(theta, dtype=np.float64)
        if theta_array.ndim != 1 or theta_array.size % self.width:
            raise ValueError(
                f"theta must be a vector of items x {self.width} values (rank {self.rank} "
                f"factors and a bias per item), got shape {theta_array.shape}"
            )
        return theta_array.reshape(-1, self.width)

    def _check_items(self, ratings: _Ratings, items: int) -> None:
        if ratings.items.size and int(ratings.items.max()) >= items:
            raise ValueError(
                f"item id {int(ratings.items.max())} is invalid because theta contains only "
                f"{items} items (ids 0 to {items - 1})"
            )

    def create_state(self, X: npt.ArrayLike, y: npt.ArrayLike) -> FactorisationState:
        """Group a provider's training rows by user, once for the whole job."""
        X_array, y_array = _validate_columns(X, y)
        return FactorisationState(rows=X_array.shape[0], ratings=_group(X_array, y_array, False))

    def _solve_users(self, theta: npt.ArrayLike, ratings: _Ratings) -> FloatArray:
        """Return each user's ridge solution [p_u, c_u] against the item parameters in theta.

        One row per entry of ``ratings.user_ids``.
        """
        V = self._item_matrix(theta)
        self._check_items(ratings, V.shape[0])
        design, targets = self._design(V, ratings)
        return _ridge_per_group(design, targets, ratings.starts, self.user_l2)

    def _design(self, V: FloatArray, ratings: _Ratings) -> tuple[FloatArray, FloatArray]:
        # r - b_j = [q_j, 1] . [p_u, c_u], so the user's design rows are [q_j, 1].
        design = np.hstack([V[ratings.items, : self.rank], np.ones((ratings.items.size, 1))])
        return design, ratings.ratings - V[ratings.items, self.rank]

    def gradient_sum(
        self,
        theta: npt.ArrayLike,
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        state: object | None = None,
    ) -> FloatArray:
        """Solve the provider's user parameters, then return the gradient for the item parameters.

        The gradient of 1/2 * sum of (r_hat - r)^2 over the held_out = 0
        rows is flattened like theta. ``state`` is the provider's
        FactorisationState for these rows. It saves the grouping of rows by
        user and receives the new user parameters. Without it the rows are
        grouped on every call and the gradient is the same. Raises ValueError
        when theta is all zeros in its factors: every p_u is then 0, so no
        factor ever moves and only the biases would be learned.
        """
        V = self._item_matrix(theta)
        if not np.any(V[:, : self.rank]):
            raise ValueError(
                "the item factors in theta are all zeros, a saddle point where the factors never "
                "move; start from MatrixFactorisation.initial_theta instead of zeros"
            )
        if state is None:
            state = self.create_state(X, y)
        if not isinstance(state, FactorisationState):
            raise TypeError(f"state must be a FactorisationState, got {type(state).__name__}")
        if state.rows != np.asarray(X).shape[0]:
            raise ValueError(
                f"state was created for {state.rows} rows, but X has {np.asarray(X).shape[0]}; "
                "create one state per provider with create_state(X, y)"
            )

        ratings = state.ratings
        self._check_items(ratings, V.shape[0])
        design, targets = self._design(V, ratings)
        solution = _ridge_per_group(design, targets, ratings.starts, self.user_l2)
        state.user_factors = solution

        per_row = np.repeat(
            solution, np.diff(np.append(ratings.starts, ratings.items.size)), axis=0
        )
        errors = np.sum(per_row * design, axis=1) - targets
        # d/dq_j = sum of e * p_u and d/db_j = sum of e over the item's ratings.
        gradient = np.empty_like(V)
        for column in range(self.rank):
            gradient[:, column] = np.bincount(
                ratings.items, weights=errors * per_row[:, column], minlength=V.shape[0]
            )
        gradient[:, self.rank] = np.bincount(ratings.items, weights=errors, minlength=V.shape[0])
        return np.asarray(gradient.ravel(), dtype=np.float64)

    def objective(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """Compute the provider's objective minimised over its user parameters, at theta.

        This is 1/2 * sum of (r_hat - r)^2 + user_l2 / 2 * sum of ||(p_u, c_u)||^2
        over the held_out = 0 rows with each user's ridge solution, the
        function whose gradient gradient_sum returns.
        """
        X_array, y_array = _validate_columns(X, y)
        ratings = _group(X_array, y_array, False)
        V = self._item_matrix(theta)
        solution = self._solve_users(V.ravel(), ratings)
        design, targets = self._design(V, ratings)
        per_row = np.repeat(
            solution, np.diff(np.append(ratings.starts, ratings.items.size)), axis=0
        )
        errors = np.sum(per_row * design, axis=1) - targets
        return float(0.5 * np.sum(errors**2) + 0.5 * self.user_l2 * np.sum(solution**2))

    def predict_held_out(
        self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike
    ) -> tuple[FloatArray, FloatArray]:
        """Fold in each user on its held_out = 0 rows and predict its held_out = 1 rows.

        Returns the predictions and the true ratings of the held-out rows. A
        user without held_out = 0 rows gets p_u = 0 and c_u = 0, so the
        prediction is the item bias.
        """
        X_array, y_array = _validate_columns(X, y)
        V = self._item_matrix(theta)
        known = _group(X_array, y_array, False)
        scored = _group(X_array, y_array, True)
        self._check_items(scored, V.shape[0])
        solution = self._solve_users(V.ravel(), known)

        users = np.zeros((scored.items.size, self.width))
        positions = np.searchsorted(known.user_ids, scored.users)
        found = positions < known.user_ids.size
        found[found] &= known.user_ids[positions[found]] == scored.users[found]
        users[found] = solution[positions[found]]
        predictions = np.sum(users[:, : self.rank] * V[scored.items, : self.rank], axis=1)
        predictions += users[:, self.rank] + V[scored.items, self.rank]
        return predictions, scored.ratings

    def loss(self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """Compute the mean squared error on the held_out = 1 rows, as in :meth:`evaluate`."""
        return self.evaluate(theta, X, y)["loss"]

    def evaluate(
        self, theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike
    ) -> dict[str, float]:
        """Score the held_out = 1 rows after folding in each user on its held_out = 0 rows.

        Returns ``loss`` (mean squared error), ``rmse`` and ``mae``, in the
        units of the ratings. Raises ValueError when no row is held out.
        """
        predictions, ratings = self.predict_held_out(theta, X, y)
        if ratings.size == 0:
            raise ValueError("no row has held_out = 1, so there is nothing to score")
        errors = predictions - ratings
        mse = float(np.mean(errors**2))
        return {"loss": mse, "rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(errors)))}

    def initial_theta(self, parameters: int) -> FloatArray:
        """Return random item factors from N(0, init_scale^2) and zero item biases, flattened."""
        if parameters % self.width:
            raise ValueError(
                f"{parameters} parameters are not a whole number of items with {self.width} "
                f"values each (rank {self.rank} and a bias): job.features must be "
                f"items x {self.width}"
            )
        V = np.zeros((parameters // self.width, self.width))
        V[:, : self.rank] = np.random.default_rng(self.seed).normal(
            scale=self.init_scale, size=(V.shape[0], self.rank)
        )
        return V.ravel()

    def parameter_count(self, X: FloatArray, y: FloatArray) -> int:
        """Return (largest item id + 1) x (rank + 1), enough for every item in X."""
        X_array, _ = _validate_columns(X, y)
        items = int(X_array[:, 1].max()) + 1 if X_array.shape[0] else 0
        return items * self.width

    def check_data(self, X: FloatArray, y: FloatArray, parameters: int) -> None:
        """Raise ValueError unless X contains valid rating rows whose item ids fit in theta."""
        X_array, _ = _validate_columns(X, y)
        if parameters % self.width:
            raise ValueError(
                f"job.features must be items x {self.width} for rank {self.rank}, "
                f"but it is {parameters}"
            )
        items = parameters // self.width
        if X_array.shape[0] and int(X_array[:, 1].max()) >= items:
            raise ValueError(
                f"item id {int(X_array[:, 1].max())} does not fit, because job.features = "
                f"{parameters} holds only {items} items of {self.width} values"
            )


def _ridge_per_group(
    design: FloatArray, targets: FloatArray, starts: IntArray, l2: float
) -> FloatArray:
    """Solve (A_g^T A_g + l2 I) w_g = A_g^T t_g for each block g of consecutive rows.

    ``starts`` holds the first row of each block, ascending. Returns one
    solution row per block.
    """
    groups = starts.size
    width = design.shape[1]
    gram = np.empty((groups, width, width))
    moments = np.empty((groups, width))
    ends = np.append(starts[1:], design.shape[0])
    first = 0
    while first < groups:
        # Blocks first..last cover at most _CHUNK_ROWS rows, or one block if it is larger.
        last = max(first + 1, int(np.searchsorted(ends, starts[first] + _CHUNK_ROWS, "right")))
        rows = slice(int(starts[first]), int(ends[last - 1]))
        block = design[rows]
        offsets = starts[first:last] - starts[first]
        gram[first:last] = np.add.reduceat(block[:, :, None] * block[:, None, :], offsets, axis=0)
        moments[first:last] = np.add.reduceat(block * targets[rows, None], offsets, axis=0)
        first = last
    gram += l2 * np.eye(width)
    solution = np.linalg.solve(gram, moments[..., None])[..., 0]
    return np.asarray(solution, dtype=np.float64)


def alternating_least_squares(
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    model: MatrixFactorisation,
    items: int,
    item_l2: float,
    iterations: int = 30,
) -> FloatArray:
    """Fit the item parameters on pooled ratings by alternating exact ridge solves, in plaintext.

    Minimises 1/2 * sum of (r_hat - r)^2 + user_l2 / 2 * sum of ||(p_u, c_u)||^2
    + item_l2 / 2 * sum of ||(q_j, b_j)||^2 over the held_out = 0 rows,
    starting from ``model.initial_theta``. Distributed gradient descent over
    P providers with the learner's penalty l2 * ||theta||^2 minimises the
    same objective divided by P when item_l2 = 2 * P * l2, so this is the
    pooled reference for such a run. Returns theta.
    """
    if not (np.isfinite(item_l2) and item_l2 > 0):
        raise ValueError(f"item_l2 must be a finite number > 0, got {item_l2!r}")
    X_array, y_array = _validate_columns(X, y)
    by_user = _group(X_array, y_array, False)
    V = model.initial_theta(items * model.width).reshape(items, model.width)
    model._check_items(by_user, items)

    # The same training rows ordered by item, for the item half-step.
    item_order = np.argsort(by_user.items, kind="stable")
    sorted_items = by_user.items[item_order]
    first = np.ones(sorted_items.size, dtype=bool)
    first[1:] = sorted_items[1:] != sorted_items[:-1]
    item_starts = np.flatnonzero(first).astype(np.intp)
    counts = np.diff(np.append(by_user.starts, by_user.items.size))

    for _ in range(iterations):
        users = np.repeat(model._solve_users(V.ravel(), by_user), counts, axis=0)[item_order]
        # r - c_u = [p_u, 1] . [q_j, b_j], so the item's design rows are [p_u, 1].
        design = np.hstack([users[:, : model.rank], np.ones((users.shape[0], 1))])
        targets = by_user.ratings[item_order] - users[:, model.rank]
        V = np.zeros_like(V)
        V[sorted_items[item_starts]] = _ridge_per_group(design, targets, item_starts, item_l2)
    return np.asarray(V.ravel(), dtype=np.float64)
