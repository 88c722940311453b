"""Built-in data sets, row splits, and the data files that providers and the learner read.

A data file contains a feature matrix ``X`` (rows x features, float64) and a label
vector ``y`` (one float64 label per row). A multi-label model takes a label
matrix ``y`` instead, with one row per row of ``X`` and one column per label.
Two formats are read:

- ``.npz`` with the arrays ``X`` and ``y``, as written by :func:`save_npz`;
  ``y`` may be a label vector or a label matrix;
- ``.csv`` with a header row and the label in the last column, as written by
  :func:`save_csv`, so always a label vector.

Any intercept column is part of ``X``, so the column count equals the number
of model parameters (``job.features`` in a topology file).
"""

from __future__ import annotations

import csv
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gradchain.errors import ConfigError

FloatArray = npt.NDArray[np.float64]

BUILTIN_DATASETS = ("breast-cancer", "phones", "digits", "digit-attributes")
"""Names accepted by :func:`load_builtin`."""

_NUMERIC_KINDS = "iuf"  # numpy dtype kinds accepted in data files: signed, unsigned, float


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """Feature matrix, labels and column names of a data set or of part of one.

    ``y`` is a label vector, or a label matrix with one column per label.
    """

    X: FloatArray
    y: FloatArray
    feature_names: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if self.X.ndim != 2 or self.y.ndim not in (1, 2) or self.X.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"data set {self.name!r}: X must be rows x features and y one label or one "
                "row of labels per row, "
                f"got X of shape {self.X.shape} and y of shape {self.y.shape}"
            )
        if len(self.feature_names) != self.X.shape[1]:
            raise ValueError(
                f"data set {self.name!r}: {len(self.feature_names)} feature names "
                f"for {self.X.shape[1]} columns"
            )

    @property
    def rows(self) -> int:
        """Number of rows."""
        return int(self.X.shape[0])

    @property
    def features(self) -> int:
        """Number of columns of ``X``, including any intercept column."""
        return int(self.X.shape[1])

    def take(self, indices: npt.NDArray[np.intp], name: str) -> Dataset:
        """Return the rows at ``indices`` as a new data set called ``name``."""
        return Dataset(
            X=self.X[indices], y=self.y[indices], feature_names=self.feature_names, name=name
        )


def load_builtin(name: str, *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Load a built-in data set by name. Both are bundled, so nothing is downloaded.

    ``"phones"`` is a three-row questionnaire. Its features are ``smoker`` and
    ``vegan``, coded +1 for yes and -1 for no, and its label is cancer (1 yes,
    0 no). It has no intercept column, and ``test_fraction`` and ``seed`` are
    ignored.

    ``"breast-cancer"`` is scikit-learn's ``load_breast_cancer`` (569 rows,
    30 features, label 1 for benign and 0 for malignant). The features are
    standardised with the mean and standard deviation of the training split
    that ``train_test_split(dataset, test_fraction, seed)`` returns for the
    same ``test_fraction`` and ``seed``, and an intercept column of ones is
    appended, so the result has 31 columns.

    ``"digits"`` is scikit-learn's ``load_digits`` (1,797 images of 8 x 8
    pixels with values 0 to 16, label the digit 0 to 9), for PCA. Every pixel
    is divided by 16 and the mean of the training split, chosen as for
    ``"breast-cancer"``, is subtracted, so the result has 64 columns and no
    intercept column.

    ``"digit-attributes"`` is the same images for multi-label logistic
    regression, with a label matrix of three columns (``DIGIT_ATTRIBUTES``):
    the digit is even, the digit is at least 5, the digit is prime. Pixels
    are standardised like the breast cancer features, with the training
    split stratified by the row of three labels, and an intercept column of
    ones is appended, so the result has 65 columns.

    Standardising with statistics of the pooled training rows is a simulation
    convenience. A real deployment has no pooled data, so it would need these
    statistics computed securely across the providers or fixed in advance.
    """
    if name == "phones":
        return _phones()
    if name == "breast-cancer":
        return _breast_cancer(test_fraction=test_fraction, seed=seed)
    if name == "digits":
        return _digits(test_fraction=test_fraction, seed=seed)
    if name == "digit-attributes":
        return _digit_attributes(test_fraction=test_fraction, seed=seed)
    raise ConfigError(
        f"unknown built-in data set {name!r} (use one of: {', '.join(BUILTIN_DATASETS)})"
    )


def _phones() -> Dataset:
    # One row per phone. Phone 1 answered yes to smoker, no to vegan and yes to
    # cancer. Phone 2 answered no to all three questions, phone 3 yes to all three.
    X = np.array([[1.0, -1.0], [-1.0, -1.0], [1.0, 1.0]])
    y = np.array([1.0, 0.0, 1.0])
    return Dataset(X=X, y=y, feature_names=("smoker", "vegan"), name="phones")


def _breast_cancer(*, test_fraction: float, seed: int) -> Dataset:
    # Imported here so that importing gradchain.data does not import scikit-learn,
    # which only this data set needs.
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.float64)

    # The split depends only on y and the seed, so standardising X afterwards
    # leaves the rows that train_test_split picks unchanged.
    train_rows, _ = _split_indices(y, test_fraction=test_fraction, seed=seed)
    mean = X[train_rows].mean(axis=0)
    std = X[train_rows].std(axis=0)
    std[std == 0.0] = 1.0  # a constant column stays constant instead of becoming NaN
    standardised = (X - mean) / std

    with_intercept = np.hstack([standardised, np.ones((X.shape[0], 1))])
    names = (*(str(feature) for feature in bunch.feature_names), "intercept")
    return Dataset(X=with_intercept, y=y, feature_names=names, name="breast-cancer")


def _digits(*, test_fraction: float, seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.float64)
    train_rows, _ = _split_indices(y, test_fraction=test_fraction, seed=seed)
    centred = X - X[train_rows].mean(axis=0)
    names = tuple(f"pixel_{row}_{column}" for row in range(8) for column in range(8))
    return Dataset(X=centred, y=y, feature_names=names, name="digits")


DIGIT_ATTRIBUTES = ("even", "at_least_5", "prime")
"""Label columns of the "digit-attributes" data set, in order."""


def _digit_attributes(*, test_fraction: float, seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    X = np.asarray(bunch.data, dtype=np.float64) / 16.0
    digit = np.asarray(bunch.target)
    labels = np.column_stack([digit % 2 == 0, digit >= 5, np.isin(digit, (2, 3, 5, 7))])
    y = labels.astype(np.float64)
    train_rows, _ = _split_indices(y, test_fraction=test_fraction, seed=seed)
    mean = X[train_rows].mean(axis=0)
    std = X[train_rows].std(axis=0)
    std[std == 0.0] = 1.0  # border pixels that are always blank stay 0
    standardised = (X - mean) / std
    with_intercept = np.hstack([standardised, np.ones((X.shape[0], 1))])
    names = (
        *(f"pixel_{row}_{column}" for row in range(8) for column in range(8)),
        "intercept",
    )
    return Dataset(X=with_intercept, y=y, feature_names=names, name="digit-attributes")


DATASETS = (
    *BUILTIN_DATASETS,
    "warfarin",
    "warfarin-outliers",
    "movielens",
    "synthetic:FEATURES[xROWS]",
)
"""Names accepted by :func:`load_split`."""

SYNTHETIC_PREFIX = "synthetic:"
#: Rows of a synthetic data set whose name gives only the feature count.
SYNTHETIC_DEFAULT_ROWS = 1000

DATASET_MODELS = {
    "breast-cancer": "logistic",
    "phones": "logistic",
    "digits": "pca",
    "digit-attributes": "multilabel-logistic",
    "warfarin": "linear",
    "warfarin-outliers": "linear",
    "movielens": "factorisation",
    "synthetic": "logistic",
}
"""The model that each data set is prepared for."""


#: Step size eta_0 of a topology that names none.
DEFAULT_LEARNING_RATE = 0.05

#: Data sets whose objective needs a smaller step than DEFAULT_LEARNING_RATE,
#: each with the step that converges and the rows per provider it was found
#: for. A provider's gradient is a sum over its rows, so the step shrinks in
#: proportion when each provider has more rows.
_TUNED_LEARNING_RATES = {
    "warfarin": (0.003, 221),
    "warfarin-outliers": (0.003, 221),
    "digits": (0.005, 120),
    "digit-attributes": (0.002, 240),
}


def default_learning_rate(name: str, rows_per_provider: float) -> float:
    """Return eta_0 for data set ``name`` split into ``rows_per_provider`` training rows each.

    Data sets without a tuned step get DEFAULT_LEARNING_RATE whatever the
    split. For the others the tuned step is scaled by tuned rows / rows per
    provider, and never raised above it.
    """
    tuned = _TUNED_LEARNING_RATES.get(name)
    if tuned is None:
        return DEFAULT_LEARNING_RATE
    step, rows = tuned
    return round(step * min(1.0, rows / max(rows_per_provider, 1.0)), 6)


@dataclass(frozen=True, kw_only=True)
class DataSplit:
    """A data set split into training rows for the providers and held-out rows for the learner."""

    train: Dataset
    test: Dataset
    model: str
    """Name of the model the data is prepared for, one of the registry's names."""
    train_groups: npt.NDArray[np.intp] | None = None
    """Group of each training row. Rows of one group must go to the same provider."""
    extra_files: Mapping[str, str] = field(default_factory=dict)
    """Text files that belong next to the data files, by file name."""
    model_settings: Mapping[str, int | float] = field(default_factory=dict)
    """``[model]`` settings that the data needs, such as label_power = 2 for labels sqrt(dose).

    Settings that the user passes override them.
    """


def load_split(
    name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DataSplit:
    """Load a data set by name and split it into training and held-out rows.

    The built-in data sets are split by :func:`train_test_split`.
    ``"warfarin"`` reads the IWPC CSV or an encoded table at ``path`` (see
    :func:`gradchain.models.warfarin.prepare_warfarin`) and adds the
    standardisation statistics as ``standardisation.json``. Without a path
    it reads the encoded table that a source checkout ships as
    ``examples/warfarin/patients.csv``. Its labels are sqrt(dose), so the
    split sets the linear model's ``label_power`` to 2. ``"warfarin-outliers"``
    is the same split with dose errors planted into some training rows
    (:func:`gradchain.models.warfarin.plant_dose_errors`) and the providers'
    outlier flagging switched on. ``"movielens"`` reads the MovieLens
    100K folder at ``path``, holds out ``test_fraction`` of the users for
    the learner and keeps each user's ratings in one group (see
    :func:`gradchain.models.movielens.split_movielens`).
    ``"synthetic:FEATURES"`` or ``"synthetic:FEATURESxROWS"`` generates
    logistic-regression data with :func:`synthetic_dataset`, seeded with
    ``seed``. Raises ConfigError for an unknown name, a missing path or
    unreadable data.
    """
    if name.startswith(SYNTHETIC_PREFIX):
        if path is not None:
            raise ConfigError(f"data set {name!r} is generated and takes no path, got {path}")
        features, rows = parse_synthetic_name(name)
        dataset = synthetic_dataset(features, rows, seed=seed)
        train, test = train_test_split(dataset, test_fraction, seed)
        return DataSplit(train=train, test=test, model=DATASET_MODELS["synthetic"])
    if name in BUILTIN_DATASETS:
        if path is not None:
            raise ConfigError(f"data set {name!r} is built in and takes no path, got {path}")
        dataset = load_builtin(name, test_fraction=test_fraction, seed=seed)
        train, test = train_test_split(dataset, test_fraction, seed)
        return DataSplit(train=train, test=test, model=DATASET_MODELS[name])
    if name in ("warfarin", "warfarin-outliers"):
        # Imported here because gradchain.models.warfarin imports this module.
        from gradchain.models.warfarin import (
            WARFARIN_MODEL_SETTINGS,
            WARFARIN_OUTLIER_SETTINGS,
            plant_dose_errors,
            prepare_warfarin,
            shipped_cohort_path,
        )

        prepared = prepare_warfarin(
            shipped_cohort_path() if path is None else path, test_fraction=test_fraction, seed=seed
        )
        train = prepared.train
        settings = dict(WARFARIN_MODEL_SETTINGS)
        if name == "warfarin-outliers":
            train = plant_dose_errors(train, seed=seed).dataset
            settings.update(WARFARIN_OUTLIER_SETTINGS)
        return DataSplit(
            train=train,
            test=prepared.test,
            model=DATASET_MODELS[name],
            extra_files={"standardisation.json": prepared.standardisation.to_json()},
            model_settings=settings,
        )
    if name == "movielens":
        from gradchain.models.movielens import split_movielens

        if path is None:
            raise ConfigError(
                "data set 'movielens' needs the path of the MovieLens 100K folder with u.data; "
                "its licence forbids redistribution, so it is not shipped"
            )
        split = split_movielens(path, eval_fraction=test_fraction, seed=seed)
        return DataSplit(
            train=split.train,
            test=split.test,
            model=DATASET_MODELS[name],
            train_groups=split.train_users,
        )
    raise ConfigError(f"unknown data set {name!r} (use one of: {', '.join(DATASETS)})")


def parse_synthetic_name(name: str) -> tuple[int, int]:
    """Return (features, rows) of a name such as ``synthetic:100`` or ``synthetic:10000x500``.

    Raises ConfigError for a malformed name or counts below 2 features or 4 rows.
    """
    spec = name.removeprefix(SYNTHETIC_PREFIX)
    features_text, separator, rows_text = spec.partition("x")
    try:
        features = int(features_text)
        rows = int(rows_text) if separator else SYNTHETIC_DEFAULT_ROWS
    except ValueError:
        raise ConfigError(
            f"invalid synthetic data set name {name!r}: expected synthetic:FEATURES or "
            "synthetic:FEATURESxROWS, e.g. synthetic:100 or synthetic:10000x500"
        ) from None
    if features < 2 or rows < 4:
        raise ConfigError(
            f"invalid synthetic data set name {name!r}: needs at least 2 features "
            f"(one is the intercept) and 4 rows, got {features} and {rows}"
        )
    return features, rows


def synthetic_dataset(features: int, rows: int, *, seed: int = 0) -> Dataset:
    """Generate ``rows`` rows of logistic-regression data with ``features`` columns.

    The first ``features - 1`` columns are standard normal and the last one
    is an intercept column of ones. Labels are drawn as Bernoulli(σ(X·w))
    with weights w ~ N(0, 1/features), so that X·w has a variance near 1 and
    both classes occur. The same arguments give the same data.
    """
    rng = np.random.default_rng(seed)
    X = np.hstack([rng.standard_normal((rows, features - 1)), np.ones((rows, 1))])
    weights = rng.normal(scale=1.0 / math.sqrt(features), size=features)
    probabilities = 1.0 / (1.0 + np.exp(-(X @ weights)))
    y = (rng.random(rows) < probabilities).astype(np.float64)
    names = (*(f"x{number}" for number in range(1, features)), "intercept")
    return Dataset(X=X, y=y, feature_names=names, name=f"{SYNTHETIC_PREFIX}{features}x{rows}")


def train_test_split(dataset: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split the rows into a training set and a test set, stratified by label.

    Each label class contributes round(test_fraction * class rows) rows to the
    test set, chosen by a generator seeded with ``seed``. For a label matrix
    each distinct row of labels is a class. Both sets keep the
    original row order. ``test_fraction = 0`` gives an empty test set.
    Raises ConfigError when the fraction is outside [0, 1) or when a non-zero
    fraction leaves the test set or the training set empty.
    """
    train_rows, test_rows = _split_indices(dataset.y, test_fraction=test_fraction, seed=seed)
    return (
        dataset.take(train_rows, f"{dataset.name} train"),
        dataset.take(test_rows, f"{dataset.name} test"),
    )


def _split_indices(
    y: FloatArray, *, test_fraction: float, seed: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")

    rng = np.random.default_rng(seed)
    classes = y if y.ndim == 1 else np.unique(y, axis=0, return_inverse=True)[1].ravel()
    test_parts = []
    for label in np.unique(classes):
        class_rows = np.flatnonzero(classes == label)
        count = math.floor(test_fraction * len(class_rows) + 0.5)
        test_parts.append(rng.permutation(class_rows)[:count])
    test_rows = np.sort(np.concatenate(test_parts)).astype(np.intp)
    train_rows = np.setdiff1d(np.arange(len(y)), test_rows).astype(np.intp)

    if test_fraction > 0.0 and len(test_rows) == 0:
        raise ConfigError(
            f"test_fraction {test_fraction} of {len(y)} rows gives an empty test set "
            "(use 0 for no test set, or a larger fraction)"
        )
    if len(train_rows) == 0:
        raise ConfigError(f"test_fraction {test_fraction} of {len(y)} rows leaves no training rows")
    return train_rows, test_rows


def split_rows(dataset: Dataset, parts: int, seed: int) -> list[Dataset]:
    """Shuffle the rows with ``seed`` and deal them into ``parts`` data sets.

    Part sizes differ by at most one row and every part gets at least one row.
    Raises ConfigError when ``parts`` is below 1 or above the number of rows.
    """
    if parts < 1:
        raise ConfigError(f"cannot split data set {dataset.name!r} into {parts} parts")
    if parts > dataset.rows:
        raise ConfigError(
            f"cannot split data set {dataset.name!r} into {parts} parts: it has only "
            f"{dataset.rows} rows and every part needs at least one"
        )

    order = np.random.default_rng(seed).permutation(dataset.rows)
    return [
        dataset.take(np.sort(chunk).astype(np.intp), f"{dataset.name} part {number}/{parts}")
        for number, chunk in enumerate(np.array_split(order, parts), start=1)
    ]


def split_groups(dataset: Dataset, groups: npt.ArrayLike, parts: int, seed: int) -> list[Dataset]:
    """Deal whole groups of rows into ``parts`` data sets, so that no group is split.

    ``groups`` gives each row's group, for example its user id. The distinct
    groups are shuffled with ``seed`` and dealt into parts whose group counts
    differ by at most one. Raises ConfigError when ``parts`` is below 1 or
    above the number of groups.
    """
    labels = np.asarray(groups)
    if labels.shape != (dataset.rows,):
        raise ValueError(f"groups must have shape ({dataset.rows},), got {labels.shape}")
    distinct = np.unique(labels)
    if parts < 1 or parts > distinct.size:
        raise ConfigError(
            f"cannot split data set {dataset.name!r} into {parts} parts: it has "
            f"{distinct.size} groups (such as users) and every part needs at least one"
        )
    order = np.random.default_rng(seed).permutation(distinct)
    return [
        dataset.take(
            np.flatnonzero(np.isin(labels, chunk)).astype(np.intp),
            f"{dataset.name} part {number}/{parts}",
        )
        for number, chunk in enumerate(np.array_split(order, parts), start=1)
    ]


def save_npz(path: str | os.PathLike[str], X: npt.ArrayLike, y: npt.ArrayLike) -> None:
    """Write ``X`` and ``y`` as float64 arrays to a compressed .npz file, creating parent folders.

    :func:`load_data_file` reads compressed and uncompressed .npz files alike.
    """
    path = Path(path)
    features = np.asarray(X, dtype=np.float64)
    labels = np.asarray(y, dtype=np.float64)
    _check_arrays(features, labels, source=str(path))

    path.parent.mkdir(parents=True, exist_ok=True)
    # Writing through a file object stops numpy from appending ".npz" to the name.
    with path.open("wb") as stream:
        np.savez_compressed(stream, X=features, y=labels)


def save_csv(
    path: str | os.PathLike[str],
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    feature_names: Sequence[str],
    label_name: str,
) -> None:
    """Write a CSV data file: a header row, then one row per sample with the label last.

    Whole numbers are written without a decimal point. Other values use the
    shortest text that reads back to the same float64.
    """
    path = Path(path)
    features = np.asarray(X, dtype=np.float64)
    labels = np.asarray(y, dtype=np.float64)
    _check_arrays(features, labels, source=str(path))
    if labels.ndim != 1:
        raise ValueError(
            f"a CSV data file has one label column, got labels of shape {labels.shape}"
        )
    if len(feature_names) != features.shape[1]:
        raise ValueError(f"{len(feature_names)} feature names for {features.shape[1]} columns")

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow([*feature_names, label_name])
        for row, label in zip(features, labels, strict=True):
            writer.writerow([_format_number(value) for value in (*row, label)])


def _format_number(value: float) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def load_data_file(path: str | os.PathLike[str]) -> tuple[FloatArray, FloatArray]:
    """Read ``(X, y)`` from an .npz or .csv data file.

    Raises ConfigError naming the path and the problem: file not found,
    unsupported suffix, unreadable file, missing arrays or columns, wrong
    dimensions, non-numeric or non-finite values, no rows, or X and y of
    different lengths.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: data file not found")

    suffix = path.suffix.lower()
    if suffix == ".npz":
        X, y = _read_npz(path)
    elif suffix == ".csv":
        X, y = _read_csv(path)
    else:
        raise ConfigError(f"{path}: unsupported data file type {suffix!r} (use .npz or .csv)")

    _check_arrays(X, y, source=str(path))
    return X.astype(np.float64), y.astype(np.float64)


def _read_npz(path: Path) -> tuple[FloatArray, FloatArray]:
    errors = (OSError, ValueError, EOFError, zipfile.BadZipFile)
    # numpy reads a file that is not a zip archive as a pickle, and its error
    # then suggests allow_pickle=True, which must never be the fix here.
    try:
        is_archive = zipfile.is_zipfile(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the .npz file: {exc}") from exc
    if not is_archive:
        raise ConfigError(
            f"{path}: not an .npz archive, because it is not a zip file; "
            "write it with numpy.savez(path, X=..., y=...)"
        )
    try:
        # allow_pickle=False: a data file must never be able to run code.
        loaded = np.load(path, allow_pickle=False)
    except errors as exc:
        raise ConfigError(f"{path}: cannot read the .npz file: {exc}") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ConfigError(f"{path}: not an .npz archive (write it with numpy.savez)")

    with loaded as archive:
        missing = [name for name in ("X", "y") if name not in archive.files]
        if missing:
            found = ", ".join(archive.files) or "none"
            raise ConfigError(
                f"{path}: missing array {' and '.join(missing)} (arrays found: {found}). "
                "A data file needs X with one row per sample and y with one label per row."
            )
        try:
            X = archive["X"]
            y = archive["y"]
        except errors as exc:
            raise ConfigError(f"{path}: cannot read the .npz file: {exc}") from exc

    for name, array in (("X", X), ("y", y)):
        if array.dtype.kind not in _NUMERIC_KINDS:
            raise ConfigError(f"{path}: array {name} has dtype {array.dtype}, expected numbers")
    return X, y


def _read_csv(path: Path) -> tuple[FloatArray, FloatArray]:
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            reader = csv.reader(stream)
            header = next(reader, None)
            if header is None:
                raise ConfigError(f"{path}: empty file, expected a header row")
            if len(header) < 2:
                raise ConfigError(
                    f"{path}: the header needs at least two columns, one or more features "
                    f"and the label last, got {len(header)}"
                )
            rows = [_parse_csv_row(path, reader.line_num, header, row) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read the CSV file: {exc}") from exc

    table = np.array(rows, dtype=np.float64).reshape(len(rows), len(header))
    return table[:, :-1], table[:, -1]


def _parse_csv_row(path: Path, line: int, header: list[str], row: list[str]) -> list[float]:
    if len(row) != len(header):
        raise ConfigError(
            f"{path}: line {line}: {len(row)} columns, expected {len(header)} as in the header"
        )
    values = []
    for column, text in zip(header, row, strict=True):
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(
                f"{path}: line {line}, column {column!r}: invalid number {text!r}"
            ) from None
        if not math.isfinite(value):
            raise ConfigError(f"{path}: line {line}, column {column!r}: non-finite value {text!r}")
        values.append(value)
    return values


def _check_arrays(X: npt.NDArray[np.generic], y: npt.NDArray[np.generic], *, source: str) -> None:
    if X.ndim != 2:
        raise ConfigError(
            f"{source}: X must have 2 dimensions (rows x features), got shape {X.shape}"
        )
    if y.ndim not in (1, 2):
        raise ConfigError(
            f"{source}: y must have 1 dimension (one label per row) or 2 (one row of labels "
            f"per row), got shape {y.shape}"
        )
    if X.shape[0] != y.shape[0]:
        raise ConfigError(f"{source}: X has {X.shape[0]} rows but y has {y.shape[0]} labels")
    if X.shape[0] == 0:
        raise ConfigError(f"{source}: the data file contains no rows")
    if X.shape[1] == 0:
        raise ConfigError(f"{source}: X has no feature columns")

    for name, array in (("X", X), ("y", y)):
        bad = np.argwhere(~np.isfinite(array))
        if len(bad) > 0:
            row = int(bad[0][0]) + 1
            raise ConfigError(
                f"{source}: {name} contains a non-finite value (NaN or infinity) "
                f"in row {row} (counting from 1)"
            )


def check_data(
    X: FloatArray,
    y: FloatArray,
    *,
    features: int,
    owner: str,
    path: str | os.PathLike[str],
    binary_labels: bool,
) -> None:
    """Raise ConfigError unless the data fits the job.

    ``X`` must have ``features`` columns (``job.features`` of the topology).
    With ``binary_labels`` every label must be 0 or 1, as logistic regression
    expects. ``owner`` names the node or learner in the message, for example
    ``"node 'p1'"``.
    """
    if y.ndim != 1:
        raise ConfigError(
            f"{owner}: data file {path} has a label matrix of shape {y.shape}, but the model "
            "needs one label per row"
        )
    columns = int(X.shape[1])
    if columns != features:
        raise ConfigError(
            f"{owner}: data file {path} has {columns} feature columns but job.features is "
            f"{features} (every data file needs exactly job.features columns, "
            "counting any intercept column)"
        )
    if binary_labels:
        bad = np.flatnonzero((y != 0.0) & (y != 1.0))
        if len(bad) > 0:
            row = int(bad[0])
            raise ConfigError(
                f"{owner}: data file {path} has label {float(y[row])} in row {row + 1} "
                "(counting from 1), but logistic regression needs labels 0 or 1"
            )
