"""MovieLens 100K ratings, read from a folder the user supplies, split for matrix factorisation.

The GroupLens licence of MovieLens 100K forbids redistribution, so gradchain
neither ships nor downloads it. Get ml-100k from
https://grouplens.org/datasets/movielens/100k/ and pass its folder.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gradchain.data import Dataset
from gradchain.errors import ConfigError
from gradchain.models.factorisation import DATA_COLUMNS

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class Ratings:
    """Ratings with 0-based user and item ids (the file's ids minus 1)."""

    users: IntArray
    items: IntArray
    ratings: FloatArray


def read_ratings(folder: str | os.PathLike[str]) -> Ratings:
    """Read ``u.data``: tab-separated user id, item id, rating 1-5 and timestamp, ids from 1.

    Raises ConfigError naming the file when it is missing or a line is invalid.
    """
    path = Path(folder) / "u.data"
    if not path.is_file():
        raise ConfigError(
            f"{path}: MovieLens ratings file not found (pass the ml-100k folder, which "
            "contains u.data)"
        )
    try:
        table = np.loadtxt(path, dtype=np.int64, delimiter="\t", ndmin=2)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the ratings: {exc}") from exc
    if table.shape[1] != 4 or table.shape[0] == 0:
        raise ConfigError(
            f"{path}: expected rows of user id, item id, rating and timestamp, got shape "
            f"{table.shape}"
        )
    if table[:, :2].min() < 1:
        raise ConfigError(f"{path}: user and item ids must start at 1")
    return Ratings(
        users=(table[:, 0] - 1).astype(np.intp),
        items=(table[:, 1] - 1).astype(np.intp),
        ratings=table[:, 2].astype(np.float64),
    )


@dataclass(frozen=True, kw_only=True)
class MovieLensSplit:
    """Ratings of the providers' users and of the learner's held-out users.

    Both data sets have the columns user, item and held_out, and the rating as
    label. ``train_users`` is the user id of each training row.
    """

    train: Dataset
    test: Dataset
    train_users: IntArray


def split_movielens(
    folder: str | os.PathLike[str],
    *,
    eval_fraction: float = 0.1,
    held_out_fraction: float = 0.2,
    seed: int = 0,
) -> MovieLensSplit:
    """Split the users between providers and learner, and flag held-out ratings of every user.

    round(eval_fraction x users) users, chosen with ``seed``, go to the
    learner's data set. For every user, round(held_out_fraction x the
    user's ratings) ratings at random get held_out = 1. For the learner's
    users, the other ratings fold them in and these are scored. For the
    providers' users they are never trained on, so a provider can score
    its own model. Raises ConfigError for fractions outside [0, 1) or a
    split that leaves no user on either side.
    """
    for name, fraction in (
        ("eval_fraction", eval_fraction),
        ("held_out_fraction", held_out_fraction),
    ):
        if not 0.0 <= fraction < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {fraction}")
    ratings = read_ratings(folder)
    rng = np.random.default_rng(seed)

    user_ids = np.unique(ratings.users)
    eval_count = math.floor(eval_fraction * user_ids.size + 0.5)
    if eval_count == 0 or eval_count == user_ids.size:
        raise ConfigError(
            f"eval_fraction {eval_fraction} of {user_ids.size} users leaves no users for the "
            "learner or none for the providers"
        )
    eval_users = rng.permutation(user_ids)[:eval_count]

    held_out = np.zeros(ratings.ratings.size, dtype=bool)
    for user in user_ids:
        rows = np.flatnonzero(ratings.users == user)
        count = math.floor(held_out_fraction * rows.size + 0.5)
        held_out[rng.choice(rows, size=count, replace=False)] = True

    X = np.column_stack([ratings.users, ratings.items, held_out]).astype(np.float64)
    is_eval = np.isin(ratings.users, eval_users)

    def dataset(rows: npt.NDArray[np.bool_], name: str) -> Dataset:
        return Dataset(X=X[rows], y=ratings.ratings[rows], feature_names=DATA_COLUMNS, name=name)

    return MovieLensSplit(
        train=dataset(~is_eval, "movielens train"),
        test=dataset(is_eval, "movielens test"),
        train_users=ratings.users[~is_eval],
    )
