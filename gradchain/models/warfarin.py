"""Warfarin dose by linear regression on the IWPC cohort: patient encoding, preparation, prediction.

The features follow the pharmacogenetic dosing algorithm of the International
Warfarin Pharmacogenetics Consortium (IWPC, N Engl J Med 2009;360:753-64),
which predicts the square root of the stable weekly dose in mg from:

- age in decades (the first digit of the age bin, so 60-69 years is 6),
  height in cm and weight in kg;
- race: Asian, Black or African American, and missing or mixed, against White;
- VKORC1 -1639 G>A (rs9923231): A/G, A/A and unknown, against G/G;
- CYP2C9: *1/*2, *1/*3, *2/*2, *2/*3, *3/*3 and unknown, against *1/*1;
- enzyme inducer status (carbamazepine, phenytoin or rifampin) and
  amiodarone status, each 1 when the patient takes the drug.

Missing values are handled as follows, for the CSV and for a single patient:

- a row without a therapeutic dose is dropped;
- a missing age, height or weight gets a 0/1 indicator column (``age_missing``
  and so on) and is replaced by the mean of the observed training values, so
  it is 0 after standardisation;
- a missing VKORC1 -1639 consensus genotype is taken from the unchecked
  rs9923231 column when the QC column is empty (a disagreement stays
  unknown), then from VKORC1 1173 C>T (rs9934438: C/C as G/G, C/T as A/G,
  T/T as A/A), which agrees with -1639 for 98.9% of the 2,658 dosed IWPC
  patients that have both. Otherwise the genotype is unknown;
- a CYP2C9 genotype that is missing or outside the six listed (*1/*5,
  *1/*6, *1/*11, *1/*13, *1/*14) is unknown;
- a drug status recorded as NA counts as not taking the drug.

The data files contain the standardised features and an intercept column of
ones. The label is sqrt(dose in mg/week). The standardisation statistics come
from the training rows and are saved as JSON next to the data, so that
:func:`predict_dose` can encode a new patient the same way.
"""

from __future__ import annotations

import csv
import json
import math
import re
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gradchain.data import Dataset, train_test_split
from gradchain.errors import ConfigError
from gradchain.models.linear import LinearRegression

FloatArray = npt.NDArray[np.float64]

FEATURE_NAMES: tuple[str, ...] = (
    "age_decades",
    "height_cm",
    "weight_kg",
    "age_missing",
    "height_missing",
    "weight_missing",
    "race_asian",
    "race_black",
    "race_missing_or_mixed",
    "vkorc1_ag",
    "vkorc1_aa",
    "vkorc1_unknown",
    "cyp2c9_1_2",
    "cyp2c9_1_3",
    "cyp2c9_2_2",
    "cyp2c9_2_3",
    "cyp2c9_3_3",
    "cyp2c9_unknown",
    "enzyme_inducer",
    "amiodarone",
)
"""Columns of the encoded patient table, before standardisation and the intercept."""

DATA_COLUMNS: tuple[str, ...] = (*FEATURE_NAMES, "intercept")
"""Columns of the prepared data files: the standardised features, then ones."""

LABEL_NAME = "sqrt_dose_mg_per_week"

RACES = ("white", "asian", "black", "unknown")
VKORC1_GENOTYPES = ("G/G", "A/G", "A/A")
CYP2C9_GENOTYPES = ("*1/*1", "*1/*2", "*1/*3", "*2/*2", "*2/*3", "*3/*3")

_NUMERIC = ("age_decades", "height_cm", "weight_kg")

# Column names of the IWPC CSV as PharmGKB distributes it.
_DOSE = "Therapeutic Dose of Warfarin"
_SUBJECT = "PharmGKB Subject ID"
_RACE = "Race"
_AGE = "Age"
_HEIGHT = "Height (cm)"
_WEIGHT = "Weight (kg)"
_VKORC1_CONSENSUS = "VKORC1 -1639 consensus"
_VKORC1_RAW = "VKORC1 genotype: -1639 G>A (3673); chr16:31015190; rs9923231; C/T"
_VKORC1_QC = "VKORC1 QC genotype: -1639 G>A (3673); chr16:31015190; rs9923231; C/T"
_VKORC1_1173 = "VKORC1 1173 consensus"
_CYP2C9 = "CYP2C9 consensus"
_INDUCERS = ("Carbamazepine (Tegretol)", "Phenytoin (Dilantin)", "Rifampin or Rifampicin")
_AMIODARONE = "Amiodarone (Cordarone)"
_IWPC_RACES = {
    "White": "white",
    "Asian": "asian",
    "Black or African American": "black",
    "Unknown": "unknown",
}
_FROM_1173 = {"C/C": "G/G", "C/T": "A/G", "T/T": "A/A"}


@dataclass(frozen=True, kw_only=True)
class Patient:
    """One patient's raw values. None means not known.

    ``race`` is one of ``RACES``, ``vkorc1`` the -1639 G>A genotype
    (``"G/G"``, ``"A/G"`` or ``"A/A"``) and ``cyp2c9`` one of
    ``CYP2C9_GENOTYPES``. Any other CYP2C9 genotype counts as unknown.
    """

    age_decades: float | None
    height_cm: float | None
    weight_kg: float | None
    race: str | None = None
    vkorc1: str | None = None
    cyp2c9: str | None = None
    enzyme_inducer: bool = False
    amiodarone: bool = False

    def __post_init__(self) -> None:
        for name in _NUMERIC:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0 or unknown, got {value!r}")
        if self.race is not None and self.race not in RACES:
            raise ConfigError(f"unknown race {self.race!r}, expected one of: {', '.join(RACES)}")
        if self.vkorc1 is not None and self.vkorc1 not in VKORC1_GENOTYPES:
            raise ConfigError(
                f"unknown VKORC1 -1639 genotype {self.vkorc1!r}, expected one of: "
                f"{', '.join(VKORC1_GENOTYPES)} (leave it out when unknown)"
            )


def encode_patient(patient: Patient) -> FloatArray:
    """Encode one patient as a row of ``FEATURE_NAMES``, with NaN for a missing number."""
    values = dict.fromkeys(FEATURE_NAMES, 0.0)
    for name in _NUMERIC:
        number = getattr(patient, name)
        values[name] = math.nan if number is None else float(number)
    values["age_missing"] = float(patient.age_decades is None)
    values["height_missing"] = float(patient.height_cm is None)
    values["weight_missing"] = float(patient.weight_kg is None)

    race = patient.race or "unknown"
    values["race_asian"] = float(race == "asian")
    values["race_black"] = float(race == "black")
    values["race_missing_or_mixed"] = float(race == "unknown")

    values["vkorc1_ag"] = float(patient.vkorc1 == "A/G")
    values["vkorc1_aa"] = float(patient.vkorc1 == "A/A")
    values["vkorc1_unknown"] = float(patient.vkorc1 is None)

    cyp2c9 = patient.cyp2c9 if patient.cyp2c9 in CYP2C9_GENOTYPES else None
    for genotype in CYP2C9_GENOTYPES[1:]:
        values[_cyp2c9_column(genotype)] = float(cyp2c9 == genotype)
    values["cyp2c9_unknown"] = float(cyp2c9 is None)

    values["enzyme_inducer"] = float(patient.enzyme_inducer)
    values["amiodarone"] = float(patient.amiodarone)
    return np.array([values[name] for name in FEATURE_NAMES], dtype=np.float64)


def _cyp2c9_column(genotype: str) -> str:
    # "*1/*2" -> "cyp2c9_1_2"
    return "cyp2c9_" + genotype.replace("*", "").replace("/", "_")


@dataclass(frozen=True, kw_only=True)
class EncodedCohort:
    """The encoded patient table: one row per patient with a therapeutic dose."""

    subject_ids: tuple[str, ...]
    features: FloatArray
    """Rows of ``FEATURE_NAMES``, with NaN for a missing age, height or weight."""
    dose: FloatArray
    """Therapeutic dose in mg/week."""


def read_cohort(path: str | os.PathLike[str]) -> EncodedCohort:
    """Read the IWPC CSV as PharmGKB distributes it, or an encoded table from :func:`write_cohort`.

    The header distinguishes the two. Raises ConfigError naming the file and the
    line for a missing file, a missing column or a value that cannot be read.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            header = reader.fieldnames or []
            if _DOSE in header:
                return _read_iwpc(path, reader)
            if "dose_mg_per_week" in header:
                return _read_encoded(path, reader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: warfarin data file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read the warfarin CSV: {exc}") from exc
    raise ConfigError(
        f"{path}: not a warfarin table, expected the IWPC CSV (column {_DOSE!r}) "
        "or an encoded table with the column 'dose_mg_per_week'"
    )


def _read_iwpc(path: Path, reader: csv.DictReader[str]) -> EncodedCohort:
    missing = [column for column in _iwpc_columns() if column not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(f"{path}: the IWPC CSV has no column {missing[0]!r}")
    ids: list[str] = []
    rows: list[FloatArray] = []
    doses: list[float] = []
    for row in reader:
        dose = _optional_number(path, reader.line_num, _DOSE, row[_DOSE])
        if dose is None:
            continue
        ids.append(row[_SUBJECT])
        rows.append(encode_patient(_patient_from_iwpc(path, reader.line_num, row)))
        doses.append(dose)
    return _cohort(path, ids, rows, doses)


def _iwpc_columns() -> tuple[str, ...]:
    return (
        _SUBJECT, _DOSE, _RACE, _AGE, _HEIGHT, _WEIGHT, _VKORC1_CONSENSUS, _VKORC1_RAW,
        _VKORC1_QC, _VKORC1_1173, _CYP2C9, *_INDUCERS, _AMIODARONE,
    )  # fmt: skip


def _patient_from_iwpc(path: Path, line: int, row: Mapping[str, str]) -> Patient:
    age = row[_AGE].strip()
    if age in ("", "NA"):
        age_decades = None
    elif age[0].isdigit():
        # "60 - 69" -> 6, "90+" -> 9, "10 - 19" -> 1
        age_decades = float(age.split()[0].rstrip("+")) // 10
    else:
        raise ConfigError(f"{path}: line {line}, column {_AGE!r}: invalid age bin {age!r}")

    race = _IWPC_RACES.get(row[_RACE])
    if race is None:
        raise ConfigError(f"{path}: line {line}, column {_RACE!r}: unknown race {row[_RACE]!r}")

    return Patient(
        age_decades=age_decades,
        height_cm=_optional_number(path, line, _HEIGHT, row[_HEIGHT]),
        weight_kg=_optional_number(path, line, _WEIGHT, row[_WEIGHT]),
        race=race,
        vkorc1=_iwpc_vkorc1(row),
        cyp2c9=row[_CYP2C9] if row[_CYP2C9] in CYP2C9_GENOTYPES else None,
        enzyme_inducer=any(row[column] == "1" for column in _INDUCERS),
        amiodarone=row[_AMIODARONE] == "1",
    )


def _iwpc_vkorc1(row: Mapping[str, str]) -> str | None:
    if row[_VKORC1_CONSENSUS] in VKORC1_GENOTYPES:
        return row[_VKORC1_CONSENSUS]
    # The consensus is NA both when no genotype was reported and when the raw and
    # QC genotypes disagree. Only the first case falls back to the raw genotype.
    if row[_VKORC1_QC] in ("", "NA") and row[_VKORC1_RAW] in VKORC1_GENOTYPES:
        return row[_VKORC1_RAW]
    return _FROM_1173.get(row[_VKORC1_1173])


def _optional_number(path: Path, line: int, column: str, text: str) -> float | None:
    if text.strip() in ("", "NA"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(
            f"{path}: line {line}, column {column!r}: invalid number {text!r}"
        ) from None
    if not math.isfinite(value):
        raise ConfigError(f"{path}: line {line}, column {column!r}: non-finite value {text!r}")
    return value


def _read_encoded(path: Path, reader: csv.DictReader[str]) -> EncodedCohort:
    expected = ["subject_id", *FEATURE_NAMES, "dose_mg_per_week"]
    if reader.fieldnames != expected:
        raise ConfigError(f"{path}: the encoded warfarin table needs the columns {expected}")
    ids: list[str] = []
    rows: list[FloatArray] = []
    doses: list[float] = []
    for row in reader:
        ids.append(row["subject_id"])
        values = [
            _optional_number(path, reader.line_num, name, row[name]) for name in FEATURE_NAMES
        ]
        rows.append(np.array([math.nan if v is None else v for v in values], dtype=np.float64))
        dose = _optional_number(path, reader.line_num, "dose_mg_per_week", row["dose_mg_per_week"])
        if dose is None:
            raise ConfigError(f"{path}: line {reader.line_num}: missing dose_mg_per_week")
        doses.append(dose)
    return _cohort(path, ids, rows, doses)


def _cohort(
    path: Path, ids: list[str], rows: list[FloatArray], doses: list[float]
) -> EncodedCohort:
    if not rows:
        raise ConfigError(f"{path}: no patient has a therapeutic dose")
    dose = np.array(doses, dtype=np.float64)
    if np.any(dose <= 0):
        row = int(np.flatnonzero(dose <= 0)[0])
        raise ConfigError(f"{path}: subject {ids[row]} has dose {dose[row]}, expected > 0 mg/week")
    return EncodedCohort(subject_ids=tuple(ids), features=np.vstack(rows), dose=dose)


def write_cohort(path: str | os.PathLike[str], cohort: EncodedCohort) -> None:
    """Write the encoded table as CSV: subject_id, ``FEATURE_NAMES``, dose_mg_per_week.

    Missing numbers are written as empty cells.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["subject_id", *FEATURE_NAMES, "dose_mg_per_week"])
        for subject, row, dose in zip(
            cohort.subject_ids, cohort.features, cohort.dose, strict=True
        ):
            writer.writerow([subject, *(_format(value) for value in row), _format(dose)])


def _format(value: float) -> str:
    if math.isnan(value):
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True, kw_only=True)
class Standardisation:
    """Imputation values, means and standard deviations of the training rows, per feature.

    ``transform`` replaces NaN by ``fill``, subtracts ``mean``, divides by
    ``std`` and appends the intercept column. A missing number therefore
    becomes 0, which is the mean because ``fill`` is the mean of the observed
    values.
    """

    fill: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, features: FloatArray) -> Standardisation:
        """Compute the statistics from encoded training rows of ``FEATURE_NAMES``."""
        if features.ndim != 2 or features.shape[1] != len(FEATURE_NAMES) or features.shape[0] == 0:
            raise ValueError(
                f"features must have shape (rows >= 1, {len(FEATURE_NAMES)}), got {features.shape}"
            )
        observed = np.where(np.isnan(features), 0.0, 1.0).sum(axis=0)
        # A column that is all NaN is filled with 0, so it becomes constant.
        fill = np.where(observed > 0, np.nansum(features, axis=0) / np.maximum(observed, 1), 0.0)
        filled = np.where(np.isnan(features), fill, features)
        mean = filled.mean(axis=0)
        std = filled.std(axis=0)
        std[std == 0.0] = 1.0  # a constant column stays constant instead of becoming NaN
        return cls(
            fill=tuple(map(float, fill)), mean=tuple(map(float, mean)), std=tuple(map(float, std))
        )

    def transform(self, features: npt.ArrayLike) -> FloatArray:
        """Standardise encoded rows and append the intercept column of ones."""
        rows = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if rows.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"expected {len(FEATURE_NAMES)} encoded columns, got {rows.shape[1]}")
        filled = np.where(np.isnan(rows), np.array(self.fill), rows)
        standardised = (filled - np.array(self.mean)) / np.array(self.std)
        return np.hstack([standardised, np.ones((rows.shape[0], 1))])

    def to_json(self) -> str:
        """Serialise the statistics, with the column names and the label, as JSON text."""
        document = {
            "features": list(FEATURE_NAMES),
            "intercept": True,
            "label": LABEL_NAME,
            "fill": list(self.fill),
            "mean": list(self.mean),
            "std": list(self.std),
        }
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Standardisation:
        """Read statistics written by :meth:`to_json`.

        Raises ConfigError when the file is missing or unreadable, or when its
        feature list differs from ``FEATURE_NAMES``.
        """
        path = Path(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: standardisation file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the standardisation file: {exc}") from exc
        if not isinstance(document, dict) or document.get("features") != list(FEATURE_NAMES):
            raise ConfigError(
                f"{path}: the feature list does not match this version's warfarin features "
                f"{', '.join(FEATURE_NAMES)}"
            )
        try:
            values = {
                key: tuple(float(v) for v in document[key]) for key in ("fill", "mean", "std")
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: invalid fill, mean or std list: {exc!r}") from exc
        if any(len(v) != len(FEATURE_NAMES) for v in values.values()):
            raise ConfigError(f"{path}: fill, mean and std need {len(FEATURE_NAMES)} values each")
        if any(s <= 0 or not math.isfinite(s) for s in values["std"]):
            raise ConfigError(f"{path}: every std must be a finite number > 0")
        return cls(fill=values["fill"], mean=values["mean"], std=values["std"])


def shipped_cohort_path() -> Path:
    """Return the encoded cohort that a source checkout ships in examples/warfarin/.

    Raises ConfigError when the file is not there, for example in an
    installed wheel, which does not contain the examples.
    """
    path = Path(__file__).resolve().parents[2] / "examples" / "warfarin" / "patients.csv"
    if not path.is_file():
        raise ConfigError(
            f"the prepared warfarin table is not at {path}; pass the path of the IWPC CSV "
            "(PharmGKB submission PS206767) or of an encoded patients.csv"
        )
    return path


@dataclass(frozen=True, kw_only=True)
class PreparedWarfarin:
    """A train/test split of the standardised cohort and the statistics behind it."""

    train: Dataset
    test: Dataset
    standardisation: Standardisation
    train_subject_ids: tuple[str, ...]
    test_subject_ids: tuple[str, ...]


def prepare_warfarin(
    path: str | os.PathLike[str], *, test_fraction: float = 0.2, seed: int = 0
) -> PreparedWarfarin:
    """Read, encode, split and standardise the cohort.

    ``path`` is the IWPC CSV or an encoded table (see :func:`read_cohort`).
    The rows are split at random with ``seed``, without stratification, and
    the statistics come from the training rows only.
    """
    cohort = read_cohort(path)
    # train_test_split stratifies by label. A constant label makes it a plain random split.
    placeholder = Dataset(
        X=np.arange(len(cohort.dose), dtype=np.float64)[:, None],
        y=np.zeros(len(cohort.dose)),
        feature_names=("row",),
        name="warfarin",
    )
    train_rows, test_rows = (
        part.X[:, 0].astype(np.intp) for part in train_test_split(placeholder, test_fraction, seed)
    )
    standardisation = Standardisation.fit(cohort.features[train_rows])

    def dataset(rows: npt.NDArray[np.intp], name: str) -> Dataset:
        return Dataset(
            X=standardisation.transform(cohort.features[rows]),
            y=np.sqrt(cohort.dose[rows]),
            feature_names=DATA_COLUMNS,
            name=name,
        )

    return PreparedWarfarin(
        train=dataset(train_rows, "warfarin train"),
        test=dataset(test_rows, "warfarin test"),
        standardisation=standardisation,
        train_subject_ids=tuple(cohort.subject_ids[i] for i in train_rows),
        test_subject_ids=tuple(cohort.subject_ids[i] for i in test_rows),
    )


def dose_from_sqrt(predictions: npt.ArrayLike) -> FloatArray:
    """Convert predicted sqrt(dose) to mg/week, treating a negative prediction as 0."""
    values = np.maximum(np.asarray(predictions, dtype=np.float64), 0.0)
    doses: FloatArray = values**2
    return doses


def dose_mae(theta: npt.ArrayLike, X: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Compute the mean absolute error in mg/week of a model that predicts sqrt(dose).

    ``y`` contains sqrt(dose), as in the prepared data files.
    """
    predicted = dose_from_sqrt(LinearRegression().predict(theta, X))
    actual = np.asarray(y, dtype=np.float64) ** 2
    return float(np.mean(np.abs(predicted - actual)))


PATIENT_KEYS = (
    "age", "height", "weight", "race", "vkorc1", "cyp2c9",
    "carbamazepine", "phenytoin", "rifampin", "amiodarone",
)  # fmt: skip
"""Keys that :func:`patient_from_values` accepts."""


def patient_from_values(values: Mapping[str, object]) -> Patient:
    """Build a Patient from raw values, for example parsed from ``key=value`` arguments.

    Keys: ``age`` in years, ``height`` in cm, ``weight`` in kg, ``race``
    (white, asian, black or unknown), ``vkorc1`` (G/G, A/G or A/A),
    ``cyp2c9`` (such as ``*1/*3``) and the drug flags ``carbamazepine``,
    ``phenytoin``, ``rifampin`` and ``amiodarone`` (yes/no, true/false,
    1/0). A missing key, None or "unknown" means not known, and a missing
    drug flag means the patient does not take the drug. Raises ConfigError
    for an unknown key or an invalid value.
    """
    unknown = sorted(set(values) - set(PATIENT_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown patient value {unknown[0]!r}, expected some of: {', '.join(PATIENT_KEYS)}"
        )
    age = _number_value(values, "age")
    cyp2c9 = _text_value(values, "cyp2c9", lower=False)
    if cyp2c9 is not None and _GENOTYPE_PATTERN.fullmatch(cyp2c9) is None:
        raise ConfigError(
            f"patient value cyp2c9: {values['cyp2c9']!r} is not a star-allele genotype such as "
            f"*1/*3 (known to the model: {', '.join(CYP2C9_GENOTYPES)}; others count as unknown)"
        )
    return Patient(
        age_decades=None if age is None else float(age // 10),
        height_cm=_number_value(values, "height"),
        weight_kg=_number_value(values, "weight"),
        race=_text_value(values, "race", lower=True),
        vkorc1=_text_value(values, "vkorc1", lower=False),
        cyp2c9=cyp2c9,
        enzyme_inducer=any(
            _flag_value(values, key) for key in ("carbamazepine", "phenytoin", "rifampin")
        ),
        amiodarone=_flag_value(values, "amiodarone"),
    )


#: Ranges that patient_from_values accepts, wider than any adult in the IWPC cohort,
#: to catch a value typed in the wrong unit or with a slipped digit.
_PLAUSIBLE = {
    "age": (0.0, 120.0, "years"),
    "height": (30.0, 250.0, "cm"),
    "weight": (1.0, 350.0, "kg"),
}
_GENOTYPE_PATTERN = re.compile(r"\*\d+[A-Z]?/\*\d+[A-Z]?")


def _is_unknown(value: object) -> bool:
    return value is None or (
        isinstance(value, str) and value.strip().lower() in ("", "unknown", "na")
    )


def _number_value(values: Mapping[str, object], key: str) -> float | None:
    value = values.get(key)
    if _is_unknown(value):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"patient value {key}: invalid number {value!r}") from None
    low, high, unit = _PLAUSIBLE[key]
    if not (math.isfinite(number) and low <= number <= high):
        raise ConfigError(
            f"patient value {key}: expected {low:g} to {high:g} {unit}, got {value!r}"
        )
    return number


def _text_value(values: Mapping[str, object], key: str, *, lower: bool) -> str | None:
    value = values.get(key)
    if _is_unknown(value):
        return None
    text = str(value).strip()
    return text.lower() if lower else text.upper()


def _flag_value(values: Mapping[str, object], key: str) -> bool:
    value = values.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("yes", "true", "1"):
        return True
    if text in ("no", "false", "0", ""):
        return False
    raise ConfigError(f"patient value {key}: expected yes or no, got {value!r}")


def predict_dose(
    model_file: str | os.PathLike[str],
    patient: Patient | Mapping[str, object],
    standardisation_file: str | os.PathLike[str],
) -> float:
    """Predict one patient's stable warfarin dose in mg/week from a trained model.

    ``model_file`` is the learner's model.json of a "linear" job trained on
    prepared warfarin data, ``patient`` a Patient or the raw values that
    :func:`patient_from_values` accepts, and ``standardisation_file`` the
    statistics that prepared the training data. The model predicts
    sqrt(dose), which is squared, and a negative prediction gives 0. Raises
    ConfigError for unreadable files, a model that is not a warfarin linear
    regression, or invalid patient values.
    """
    theta = _read_linear_theta(Path(model_file))
    statistics = Standardisation.load(standardisation_file)
    record = patient if isinstance(patient, Patient) else patient_from_values(patient)
    row = statistics.transform(encode_patient(record))
    return float(dose_from_sqrt(row @ theta)[0])


def _read_linear_theta(path: Path) -> FloatArray:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: model file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the model file: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a JSON object with the keys model and theta")
    if document.get("model") != "linear":
        raise ConfigError(
            f"{path}: model is {document.get('model')!r}, but a dose needs a 'linear' model "
            "trained on prepared warfarin data"
        )
    theta = np.asarray(document.get("theta"), dtype=np.float64)
    if theta.shape != (len(DATA_COLUMNS),) or not np.all(np.isfinite(theta)):
        raise ConfigError(
            f"{path}: theta must be {len(DATA_COLUMNS)} finite numbers, one per warfarin data "
            f"column ({', '.join(DATA_COLUMNS)}), got shape {theta.shape}"
        )
    return theta


WARFARIN_MODEL_SETTINGS: dict[str, int | float] = {"label_power": 2}
"""``[model]`` settings of a linear job on the prepared data: the labels are sqrt(dose)."""

PLANTED_ERROR_FRACTION = 0.02
"""Share of the training rows that :func:`plant_dose_errors` corrupts by default."""

PLANTED_DOSE_FACTOR = 10.0
"""Factor of a planted dose error: the dose recorded with its decimal point one place off."""

WARFARIN_OUTLIER_SETTINGS: dict[str, int | float] = {"outlier_mad_scale": 3.5}
"""Outlier flagging for the data with planted dose errors: 3.5 robust standard deviations."""


@dataclass(frozen=True, kw_only=True)
class PlantedDoseErrors:
    """A data set with dose errors planted into some rows, and the indices of those rows."""

    dataset: Dataset
    rows: npt.NDArray[np.intp]
    """Indices of the corrupted rows, ascending."""


def plant_dose_errors(
    dataset: Dataset,
    *,
    fraction: float = PLANTED_ERROR_FRACTION,
    factor: float = PLANTED_DOSE_FACTOR,
    seed: int = 0,
) -> PlantedDoseErrors:
    """Multiply the dose of round(fraction x rows) random rows by ``factor``, as data-entry errors.

    The labels are sqrt(dose), so each chosen label is multiplied by
    sqrt(factor). The rows are drawn with ``seed``. Raises ConfigError for a
    fraction outside [0, 1] or a factor that is not a finite number > 0.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"fraction must be in [0, 1], got {fraction}")
    if not (math.isfinite(factor) and factor > 0):
        raise ConfigError(f"factor must be a finite number > 0, got {factor}")
    count = math.floor(fraction * dataset.rows + 0.5)
    rows = np.sort(np.random.default_rng(seed).choice(dataset.rows, size=count, replace=False))
    y = dataset.y.copy()
    y[rows] *= math.sqrt(factor)
    corrupted = Dataset(
        X=dataset.X, y=y, feature_names=dataset.feature_names, name=f"{dataset.name} with errors"
    )
    return PlantedDoseErrors(dataset=corrupted, rows=rows.astype(np.intp))
