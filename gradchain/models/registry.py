"""The lookup of models by name, and the settings each model accepts.

A topology's optional ``[model]`` table contains these settings. Models without
settings reject any key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gradchain.errors import ConfigError
from gradchain.models.factorisation import MatrixFactorisation
from gradchain.models.interface import Model
from gradchain.models.linear import LinearRegression
from gradchain.models.logistic import LogisticRegression
from gradchain.models.multilabel import MultiLabel
from gradchain.models.pca import PCA

__all__ = ["MODEL_NAMES", "MODEL_SETTINGS", "Model", "ModelSetting", "get_model"]

SettingValue = int | float


@dataclass(frozen=True, kw_only=True)
class ModelSetting:
    """One key of the ``[model]`` table: its type, default and smallest valid value."""

    name: str
    kind: type[int] | type[float]
    default: SettingValue
    minimum: SettingValue | None = None
    minimum_allowed: bool = True
    """Whether ``minimum`` itself is valid (>=) or only larger values are (>)."""
    description: str = ""

    def problem(self, value: SettingValue) -> str | None:
        """Return why ``value`` is invalid for this setting, or None when it is valid."""
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            return f"expected an integer, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {value!r}"
        if not math.isfinite(value):
            return f"expected a finite number, got {value!r}"
        if self.minimum is not None:
            if self.minimum_allowed and value < self.minimum:
                return f"must be at least {self.minimum}, got {value}"
            if not self.minimum_allowed and value <= self.minimum:
                return f"must be greater than {self.minimum}, got {value}"
        return None


_SEED = ModelSetting(
    name="seed", kind=int, default=0, description="seed of the random starting theta"
)

MODEL_SETTINGS: dict[str, tuple[ModelSetting, ...]] = {
    "logistic": (),
    "linear": (
        ModelSetting(
            name="label_power",
            kind=int,
            default=1,
            minimum=1,
            description="the labels are the label_power-th root of the target (2 for sqrt(dose)); "
            "evaluation adds target_mae in the target's units",
        ),
        ModelSetting(
            name="outlier_threshold",
            kind=float,
            default=0.0,
            minimum=0.0,
            description="after training, each provider counts its rows whose absolute residual "
            "exceeds this, in the units of the labels; 0 switches it off",
        ),
        ModelSetting(
            name="outlier_mad_scale",
            kind=float,
            default=0.0,
            minimum=0.0,
            description="like outlier_threshold, with a threshold of this many robust standard "
            "deviations (1.4826 MAD) of each provider's own residuals; 0 switches it off",
        ),
    ),
    "multilabel-logistic": (),
    "pca": (
        ModelSetting(
            name="components", kind=int, default=2, minimum=1, description="principal components k"
        ),
        _SEED,
    ),
    "factorisation": (
        ModelSetting(
            name="rank", kind=int, default=8, minimum=1, description="length of each factor"
        ),
        ModelSetting(
            name="user_l2",
            kind=float,
            default=5.0,
            minimum=0.0,
            minimum_allowed=False,
            description="ridge penalty of the user parameters, solved at each provider",
        ),
        ModelSetting(
            name="init_scale",
            kind=float,
            default=0.1,
            minimum=0.0,
            minimum_allowed=False,
            description="standard deviation of the random starting item factors",
        ),
        _SEED,
    ),
}
"""Settings of each model, by model name."""


def _pca(settings: Mapping[str, SettingValue]) -> Model:
    return PCA(components=int(settings["components"]), seed=int(settings["seed"]))


def _linear(settings: Mapping[str, SettingValue]) -> Model:
    return LinearRegression(
        label_power=int(settings["label_power"]),
        outlier_threshold=float(settings["outlier_threshold"]),
        outlier_mad_scale=float(settings["outlier_mad_scale"]),
    )


def _factorisation(settings: Mapping[str, SettingValue]) -> Model:
    return MatrixFactorisation(
        rank=int(settings["rank"]),
        user_l2=float(settings["user_l2"]),
        init_scale=float(settings["init_scale"]),
        seed=int(settings["seed"]),
    )


_MODEL_FACTORIES: dict[str, Callable[[Mapping[str, SettingValue]], Model]] = {
    "logistic": lambda _: LogisticRegression(),
    "linear": _linear,
    "multilabel-logistic": lambda _: MultiLabel(LogisticRegression()),
    "pca": _pca,
    "factorisation": _factorisation,
}

MODEL_NAMES: tuple[str, ...] = tuple(sorted(_MODEL_FACTORIES))
"""Names that get_model accepts, which are the valid values of the job's ``model`` setting."""


def resolve_settings(
    name: str, settings: Mapping[str, SettingValue] | None = None
) -> dict[str, SettingValue]:
    """Return the model's settings with defaults filled in.

    Raises ConfigError for an unknown model, an unknown key or an invalid
    value, naming the key.
    """
    specs = MODEL_SETTINGS.get(name)
    if specs is None:
        known = ", ".join(repr(known_name) for known_name in MODEL_NAMES)
        raise ConfigError(f"unknown model {name!r}, expected one of: {known}")
    given = dict(settings or {})
    allowed = {spec.name: spec for spec in specs}
    for key in given:
        if key not in allowed:
            listed = ", ".join(allowed) if allowed else f"none, model {name!r} takes no settings"
            raise ConfigError(f"model setting {key!r} is unknown (allowed: {listed})")
    resolved: dict[str, SettingValue] = {}
    for spec in specs:
        value = given.get(spec.name, spec.default)
        problem = spec.problem(value)
        if problem is not None:
            raise ConfigError(f"model setting {spec.name!r} {problem}")
        resolved[spec.name] = value
    return resolved


def get_model(name: str, settings: Mapping[str, SettingValue] | None = None) -> Model:
    """Create the model registered under ``name`` with the given ``[model]`` settings.

    Missing settings take their defaults. Raises ConfigError listing the known
    names when ``name`` is not one of them, and naming the key for an unknown
    or invalid setting.
    """
    resolved = resolve_settings(name, settings)
    return _MODEL_FACTORIES[name](resolved)
