"""Tests for gradchain.data: built-in data sets, row splits and data files."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

from gradchain.data import (
    Dataset,
    check_data,
    default_learning_rate,
    load_builtin,
    load_data_file,
    load_split,
    save_csv,
    save_npz,
    split_groups,
    split_rows,
    train_test_split,
)
from gradchain.errors import ConfigError


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def gradient_sum(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return the sum over rows of (sigmoid(x . theta) - y) x, a provider's partial gradient."""
    return X.T @ (sigmoid(X @ theta) - y)


def test_phones_rows() -> None:
    phones = load_builtin("phones")

    np.testing.assert_array_equal(phones.X, [[1, -1], [-1, -1], [1, 1]])
    np.testing.assert_array_equal(phones.y, [1, 0, 1])
    assert phones.feature_names == ("smoker", "vegan")
    assert phones.X.dtype == np.float64
    assert phones.y.dtype == np.float64


def test_phone1_gradient_at_zero() -> None:
    phones = load_builtin("phones")

    gradient = gradient_sum(np.zeros(2), phones.X[:1], phones.y[:1])

    np.testing.assert_allclose(gradient, [-0.5, 0.5])


def test_phones_total_gradient_at_zero() -> None:
    phones = load_builtin("phones")

    gradient = gradient_sum(np.zeros(2), phones.X, phones.y)

    np.testing.assert_allclose(gradient, [-1.5, -0.5])


def test_breast_cancer_shape() -> None:
    dataset = load_builtin("breast-cancer")

    assert dataset.X.shape == (569, 31)
    assert dataset.feature_names[-1] == "intercept"
    assert dataset.feature_names[0] == "mean radius"
    np.testing.assert_array_equal(dataset.X[:, -1], np.ones(569))
    assert set(np.unique(dataset.y)) == {0.0, 1.0}


@pytest.mark.parametrize(("test_fraction", "seed"), [(0.2, 0), (0.3, 5)])
def test_breast_cancer_standardised_with_training_rows(test_fraction: float, seed: int) -> None:
    dataset = load_builtin("breast-cancer", test_fraction=test_fraction, seed=seed)
    train, test = train_test_split(dataset, test_fraction, seed)

    raw = load_breast_cancer()
    raw_train, _ = train_test_split(
        Dataset(
            X=raw.data, y=raw.target.astype(float), feature_names=tuple(raw.feature_names), name="r"
        ),
        test_fraction,
        seed,
    )
    mean = raw_train.X.mean(axis=0)
    std = raw_train.X.std(axis=0)

    np.testing.assert_allclose(train.X[:, :-1].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(train.X[:, :-1].std(axis=0), 1.0)
    np.testing.assert_allclose(dataset.X[:, :-1], (raw.data - mean) / std)
    assert test.rows > 0


def test_unknown_builtin_rejected() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown built-in data set 'iris'.*breast-cancer, phones"
    ):
        load_builtin("iris")


def labelled(labels: list[int]) -> Dataset:
    """Return a data set whose single feature is the row number."""
    rows = np.arange(len(labels), dtype=np.float64).reshape(-1, 1)
    return Dataset(X=rows, y=np.array(labels, dtype=np.float64), feature_names=("row",), name="t")


def test_split_stratified_and_complete() -> None:
    dataset = labelled([0] * 40 + [1] * 60)

    train, test = train_test_split(dataset, 0.25, seed=3)

    assert test.rows == 25
    assert int(test.y.sum()) == 15
    combined = np.sort(np.concatenate([train.X[:, 0], test.X[:, 0]]))
    np.testing.assert_array_equal(combined, np.arange(100))


def test_split_depends_on_seed() -> None:
    dataset = labelled([0] * 40 + [1] * 60)

    _, first = train_test_split(dataset, 0.25, seed=3)
    _, again = train_test_split(dataset, 0.25, seed=3)
    _, other = train_test_split(dataset, 0.25, seed=4)

    np.testing.assert_array_equal(first.X, again.X)
    assert not np.array_equal(first.X, other.X)


def test_split_zero_fraction_gives_empty_test_set() -> None:
    train, test = train_test_split(labelled([0, 1, 1]), 0.0, seed=0)

    assert train.rows == 3
    assert test.rows == 0


@pytest.mark.parametrize(
    ("labels", "fraction", "message"),
    [
        pytest.param([0, 1], -0.1, r"must be in \[0, 1\), got -0.1", id="negative"),
        pytest.param([0, 1], 1.0, r"must be in \[0, 1\), got 1.0", id="one"),
        pytest.param([0, 1, 1], 0.2, "gives an empty test set", id="empty-test-set"),
        pytest.param([0, 1], 0.9, "leaves no training rows", id="empty-training-set"),
    ],
)
def test_split_rejects(labels: list[int], fraction: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train_test_split(labelled(labels), fraction, seed=0)


@pytest.mark.parametrize(("rows", "parts"), [(10, 3), (10, 10), (569, 12), (5, 1)])
def test_split_rows_sizes(rows: int, parts: int) -> None:
    shards = split_rows(labelled([0] * rows), parts, seed=1)

    sizes = [shard.rows for shard in shards]
    assert len(shards) == parts
    assert min(sizes) >= 1
    assert max(sizes) - min(sizes) <= 1
    combined = np.sort(np.concatenate([shard.X[:, 0] for shard in shards]))
    np.testing.assert_array_equal(combined, np.arange(rows))


def test_split_rows_shuffles_by_seed() -> None:
    dataset = labelled([0] * 20)

    first = split_rows(dataset, 2, seed=1)
    again = split_rows(dataset, 2, seed=1)
    other = split_rows(dataset, 2, seed=2)

    np.testing.assert_array_equal(first[0].X, again[0].X)
    assert not np.array_equal(first[0].X, other[0].X)
    assert not np.array_equal(first[0].X[:, 0], np.arange(10))


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        pytest.param(4, "into 4 parts: it has only 3 rows", id="more-parts-than-rows"),
        pytest.param(0, "into 0 parts", id="zero-parts"),
    ],
)
def test_split_rows_rejects(parts: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        split_rows(labelled([0, 1, 0]), parts, seed=0)


def test_npz_round_trip(tmp_path: Path) -> None:
    X = np.array([[0.1, -2.5], [3.0, 4.0]])
    y = np.array([1.0, 0.0])
    path = tmp_path / "nested" / "part.npz"

    save_npz(path, X, y)
    loaded_X, loaded_y = load_data_file(path)

    np.testing.assert_array_equal(loaded_X, X)
    np.testing.assert_array_equal(loaded_y, y)
    assert loaded_X.dtype == np.float64


def test_save_npz_compresses(tmp_path: Path) -> None:
    X = np.zeros((1000, 20))
    path = tmp_path / "zeros.npz"

    save_npz(path, X, np.zeros(1000))

    # 168,000 bytes of float64 zeros shrink to well under a tenth.
    assert path.stat().st_size < 16_800
    np.testing.assert_array_equal(load_data_file(path)[0], X)


def test_csv_round_trip(tmp_path: Path) -> None:
    X = np.array([[0.1, -2.0], [1e-300, 4.0]])
    y = np.array([1.0, 0.0])
    path = tmp_path / "part.csv"

    save_csv(path, X, y, feature_names=["a", "b"], label_name="label")
    loaded_X, loaded_y = load_data_file(path)

    assert path.read_text(encoding="utf-8").splitlines()[:2] == ["a,b,label", "0.1,-2,1"]
    np.testing.assert_array_equal(loaded_X, X)
    np.testing.assert_array_equal(loaded_y, y)


def test_csv_integer_columns_read(tmp_path: Path) -> None:
    path = tmp_path / "ints.csv"
    path.write_text("smoker,vegan,cancer\n1,-1,1\n\n-1,-1,0\n", encoding="utf-8")

    X, y = load_data_file(path)

    np.testing.assert_array_equal(X, [[1, -1], [-1, -1]])
    np.testing.assert_array_equal(y, [1, 0])


def write_npz(**arrays: object) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / "bad.npz"
        with path.open("wb") as stream:
            np.savez(stream, **arrays)  # type: ignore[arg-type]
        return path

    return write


def write_bytes(name: str, content: bytes) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content)
        return path

    return write


def write_pickled_npz(folder: Path) -> Path:
    path = folder / "bad.npz"
    with path.open("wb") as stream:
        np.savez(stream, X=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    return path


def write_npy(folder: Path) -> Path:
    path = folder / "bad.npz"
    with path.open("wb") as stream:
        np.save(stream, np.zeros((2, 2)))
    return path


# Each case: function that writes the file into a folder and returns its path, message fragment.
BAD_FILES = [
    pytest.param(lambda folder: folder / "absent.npz", "data file not found", id="missing"),
    pytest.param(
        write_bytes("data.txt", b"1,2\n"), "unsupported data file type '.txt'", id="suffix"
    ),
    pytest.param(write_npz(X=np.ones((2, 2))), "missing array y (arrays found: X", id="no-y"),
    pytest.param(write_npz(a=np.ones(2)), "missing array X and y", id="no-arrays"),
    pytest.param(write_npz(X=np.ones(3), y=np.ones(3)), "X must have 2 dimensions", id="X-one-dim"),
    pytest.param(
        write_npz(X=np.ones((3, 2)), y=np.ones((3, 1, 1))),
        "y must have 1 dimension (one label per row) or 2",
        id="y-three-dim",
    ),
    pytest.param(
        write_npz(X=np.ones((3, 2)), y=np.ones(2)),
        "X has 3 rows but y has 2 labels",
        id="length-mismatch",
    ),
    pytest.param(write_npz(X=np.ones((0, 2)), y=np.ones(0)), "contains no rows", id="no-rows"),
    pytest.param(
        write_npz(X=np.ones((2, 0)), y=np.ones(2)), "X has no feature columns", id="no-columns"
    ),
    pytest.param(
        write_npz(X=np.array([[1.0, 2.0], [np.nan, 1.0]]), y=np.ones(2)),
        "X contains a non-finite value (NaN or infinity) in row 2",
        id="nan-in-X",
    ),
    pytest.param(
        write_npz(X=np.ones((2, 2)), y=np.array([np.inf, 1.0])),
        "y contains a non-finite value (NaN or infinity) in row 1",
        id="inf-in-y",
    ),
    pytest.param(
        write_npz(X=np.array([["a", "b"]]), y=np.ones(1)),
        "array X has dtype <U1, expected numbers",
        id="strings",
    ),
    pytest.param(write_pickled_npz, "cannot read the .npz file", id="pickled-objects"),
    pytest.param(write_npy, "not an .npz archive", id="npy-file"),
    pytest.param(write_bytes("bad.npz", b"not a zip"), "not an .npz archive, because it is not a zip", id="corrupt"),
    pytest.param(write_bytes("bad.csv", b""), "empty file, expected a header row", id="csv-empty"),
    pytest.param(
        write_bytes("bad.csv", b"label\n1\n"),
        "the header needs at least two columns, one or more features and the label last, got 1",
        id="csv-one-column",
    ),
    pytest.param(
        write_bytes("bad.csv", b"a,b,label\n1,2,1\n1,2\n"),
        "line 3: 2 columns, expected 3 as in the header",
        id="csv-short-row",
    ),
    pytest.param(
        write_bytes("bad.csv", b"a,b,label\n1,x,1\n"),
        "line 2, column 'b': invalid number 'x'",
        id="csv-not-a-number",
    ),
    pytest.param(
        write_bytes("bad.csv", b"a,b,label\n1,2,nan\n"),
        "line 2, column 'label': non-finite value 'nan'",
        id="csv-nan",
    ),
    pytest.param(write_bytes("bad.csv", b"a,b,label\n"), "contains no rows", id="csv-header-only"),
    pytest.param(
        write_bytes("bad.csv", b"a,b,label\n\xff,1,1\n"),
        "cannot read the CSV file",
        id="csv-not-utf8",
    ),
]


@pytest.mark.parametrize(("write", "message"), BAD_FILES)
def test_bad_data_file_rejected(
    tmp_path: Path, write: Callable[[Path], Path], message: str
) -> None:
    path = write(tmp_path)

    with pytest.raises(ConfigError) as caught:
        load_data_file(path)

    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_pickled_npz_never_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_pickled_npz(tmp_path)

    def fail(*args: object, **kwargs: object) -> object:
        raise AssertionError("pickle.loads called")

    monkeypatch.setattr(pickle, "loads", fail)
    monkeypatch.setattr(pickle, "load", fail)

    with pytest.raises(ConfigError):
        load_data_file(path)


def test_check_data_accepts_matching_data() -> None:
    check_data(
        np.ones((2, 3)),
        np.array([0.0, 1.0]),
        features=3,
        owner="node 'p1'",
        path="p1.npz",
        binary_labels=True,
    )


def test_check_data_feature_mismatch() -> None:
    with pytest.raises(ConfigError) as caught:
        check_data(
            np.ones((2, 30)),
            np.array([0.0, 1.0]),
            features=31,
            owner="node 'p7'",
            path="data/p7.npz",
            binary_labels=True,
        )

    message = str(caught.value)
    assert "node 'p7'" in message
    assert "data/p7.npz" in message
    assert "has 30 feature columns but job.features is 31" in message


def test_check_data_label_not_binary() -> None:
    with pytest.raises(ConfigError, match=r"node 'p2'.*label 2.0 in row 3"):
        check_data(
            np.ones((3, 1)),
            np.array([0.0, 1.0, 2.0]),
            features=1,
            owner="node 'p2'",
            path="p2.npz",
            binary_labels=True,
        )


def test_check_data_any_label_without_binary_check() -> None:
    check_data(
        np.ones((1, 1)),
        np.array([2.0]),
        features=1,
        owner="node 'p2'",
        path="p2.npz",
        binary_labels=False,
    )


def test_dataset_rejects_mismatched_names() -> None:
    with pytest.raises(ValueError, match="1 feature names for 2 columns"):
        Dataset(X=np.ones((1, 2)), y=np.ones(1), feature_names=("a",), name="t")


def test_dataset_rejects_mismatched_rows() -> None:
    with pytest.raises(ValueError, match="got X of shape"):
        Dataset(X=np.ones((2, 1)), y=np.ones(3), feature_names=("a",), name="t")


def test_digits_centred_on_training_rows() -> None:
    digits = load_builtin("digits", test_fraction=0.2, seed=0)
    train, test = train_test_split(digits, 0.2, 0)

    assert digits.X.shape == (1797, 64)
    assert digits.feature_names[9] == "pixel_1_1"
    np.testing.assert_allclose(train.X.mean(axis=0), 0.0, atol=1e-12)
    assert np.abs(digits.X).max() <= 1.0
    assert test.rows == 359


def test_load_split_builtin_matches_train_test_split() -> None:
    split = load_split("breast-cancer", test_fraction=0.2, seed=1)
    train, test = train_test_split(load_builtin("breast-cancer", test_fraction=0.2, seed=1), 0.2, 1)

    np.testing.assert_array_equal(split.train.X, train.X)
    np.testing.assert_array_equal(split.test.y, test.y)
    assert split.model == "logistic"
    assert split.train_groups is None


def test_load_split_warfarin_from_shipped_copy() -> None:
    split = load_split("warfarin")

    assert split.model == "linear"
    assert split.train.X.shape == (4422, 21)
    assert split.test.X.shape == (1106, 21)
    np.testing.assert_array_equal(split.train.X[:, -1], 1.0)
    assert "standardisation.json" in split.extra_files
    assert split.model_settings == {"label_power": 2}


def test_warfarin_outliers_plant_dose_errors() -> None:
    clean = load_split("warfarin")
    planted = load_split("warfarin-outliers")

    changed = np.flatnonzero(planted.train.y != clean.train.y)

    assert planted.model == "linear"
    assert planted.model_settings == {"label_power": 2, "outlier_mad_scale": 3.5}
    # 2% of the 4,422 training rows, each with ten times the dose, which is
    # sqrt(10) times the label sqrt(dose).
    assert changed.size == 88
    np.testing.assert_allclose(
        planted.train.y[changed] ** 2, 10 * clean.train.y[changed] ** 2, rtol=1e-12
    )
    np.testing.assert_array_equal(planted.train.X, clean.train.X)
    np.testing.assert_array_equal(planted.test.y, clean.test.y)


def test_digit_attributes_labels() -> None:
    dataset = load_builtin("digit-attributes", test_fraction=0.2, seed=0)
    digit = load_digits().target

    assert dataset.X.shape == (1797, 65)
    np.testing.assert_array_equal(dataset.X[:, -1], 1.0)
    np.testing.assert_array_equal(dataset.y[:, 0], digit % 2 == 0)
    np.testing.assert_array_equal(dataset.y[:, 1], digit >= 5)
    np.testing.assert_array_equal(dataset.y[:, 2], np.isin(digit, [2, 3, 5, 7]))


def test_digit_attributes_standardised_on_training_rows() -> None:
    split = load_split("digit-attributes", test_fraction=0.2, seed=0)
    pixels = split.train.X[:, :-1]
    varying = pixels.std(axis=0) > 0

    assert split.model == "multilabel-logistic"
    assert split.train.rows + split.test.rows == 1797
    # Each of the 8 combinations of labels rounds its own 20%, so the total is off by < 4 rows.
    assert abs(split.test.rows - 0.2 * 1797) < 4
    np.testing.assert_allclose(pixels.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(pixels[:, varying].std(axis=0), 1.0, rtol=1e-12)


def test_load_split_unknown_name() -> None:
    with pytest.raises(ConfigError, match="unknown data set 'iris'"):
        load_split("iris")


def test_split_groups_keeps_groups_together() -> None:
    data = Dataset(
        X=np.arange(20, dtype=np.float64)[:, None],
        y=np.zeros(20),
        feature_names=("row",),
        name="grouped",
    )
    groups = np.repeat([5, 1, 9, 3, 7], 4)

    parts = split_groups(data, groups, 3, seed=0)

    seen = [set(groups[part.X[:, 0].astype(int)].tolist()) for part in parts]
    assert sorted(len(group) for group in seen) == [1, 2, 2]
    assert set().union(*seen) == {1, 3, 5, 7, 9}
    assert sum(part.rows for part in parts) == 20


def test_split_groups_rejects_more_parts_than_groups() -> None:
    data = Dataset(X=np.zeros((4, 1)), y=np.zeros(4), feature_names=("a",), name="small")

    with pytest.raises(ConfigError, match="it has 2 groups"):
        split_groups(data, [0, 0, 1, 1], 3, seed=0)


def test_label_matrix_round_trip(tmp_path: Path) -> None:
    labels = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    save_npz(tmp_path / "labels.npz", np.ones((3, 2)), labels)

    _, y = load_data_file(tmp_path / "labels.npz")

    np.testing.assert_array_equal(y, labels)


def test_label_matrix_not_written_as_csv(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a CSV data file has one label column"):
        save_csv(
            tmp_path / "labels.csv",
            np.ones((2, 1)),
            np.ones((2, 2)),
            feature_names=["a"],
            label_name="label",
        )


def test_check_data_rejects_label_matrix() -> None:
    with pytest.raises(ConfigError, match=r"label matrix of shape \(2, 2\)"):
        check_data(
            np.ones((2, 2)),
            np.ones((2, 2)),
            features=2,
            owner="node 'p1'",
            path="p1.npz",
            binary_labels=False,
        )


def test_split_stratifies_label_rows() -> None:
    labels = np.array([[0.0, 1.0]] * 10 + [[1.0, 1.0]] * 10)
    data = Dataset(X=np.zeros((20, 1)), y=labels, feature_names=("a",), name="multi")

    _, test = train_test_split(data, 0.2, seed=0)

    assert test.rows == 4
    assert sorted(test.y[:, 0].tolist()) == [0.0, 0.0, 1.0, 1.0]


def test_non_zip_npz_error_is_safe(tmp_path: Path) -> None:
    path = tmp_path / "p1.npz"
    path.write_bytes(b"X,y\n1,0\n")

    with pytest.raises(ConfigError) as caught:
        load_data_file(path)

    assert "numpy.savez" in str(caught.value)
    assert "allow_pickle" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "rows", "expected"),
    [
        ("breast-cancer", 38, 0.05),
        ("breast-cancer", 5000, 0.05),
        ("warfarin", 221, 0.003),
        ("warfarin", 737, 0.0009),
        # Fewer rows per provider than the step was found for never raise the step.
        ("warfarin", 50, 0.003),
        ("digits", 240, 0.0025),
    ],
)
def test_default_learning_rate_scales_with_rows(
    name: str, rows: float, expected: float
) -> None:
    assert default_learning_rate(name, rows) == pytest.approx(expected, rel=1e-3)
