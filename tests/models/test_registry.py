"""Tests for gradchain.models.registry: models by name and their settings."""

from __future__ import annotations

import pytest

from gradchain.errors import ConfigError
from gradchain.models.factorisation import MatrixFactorisation
from gradchain.models.linear import LinearRegression
from gradchain.models.logistic import LogisticRegression
from gradchain.models.multilabel import MultiLabel
from gradchain.models.pca import PCA
from gradchain.models.registry import MODEL_NAMES, MODEL_SETTINGS, get_model, resolve_settings
from gradchain.topology import MODELS


def test_get_model_logistic() -> None:
    assert isinstance(get_model("logistic"), LogisticRegression)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("linear", LinearRegression),
        ("pca", PCA),
        ("factorisation", MatrixFactorisation),
        ("multilabel-logistic", MultiLabel),
    ],
)
def test_get_model_by_name(name: str, kind: type) -> None:
    assert isinstance(get_model(name), kind)


def test_model_names_match_topology_models() -> None:
    assert set(MODEL_NAMES) == set(MODELS)
    assert set(MODEL_SETTINGS) == set(MODEL_NAMES)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("ridge", id="not-registered"),
        pytest.param("Logistic", id="wrong-case"),
        pytest.param("", id="empty"),
    ],
)
def test_get_model_unknown_lists_known_names(name: str) -> None:
    known = ", ".join(repr(known_name) for known_name in MODEL_NAMES)
    with pytest.raises(ConfigError, match=rf"unknown model {name!r}, expected one of: {known}"):
        get_model(name)


def test_settings_reach_the_model() -> None:
    pca = get_model("pca", {"components": 5, "seed": 3})
    factorisation = get_model("factorisation", {"rank": 4, "user_l2": 2.5})

    assert isinstance(pca, PCA)
    assert pca.components == 5
    assert pca.seed == 3
    assert isinstance(factorisation, MatrixFactorisation)
    assert factorisation.rank == 4
    assert factorisation.user_l2 == 2.5
    assert factorisation.init_scale == 0.1


def test_resolve_settings_fills_defaults() -> None:
    assert resolve_settings("pca") == {"components": 2, "seed": 0}
    assert resolve_settings("logistic") == {}
    assert resolve_settings("linear") == {
        "label_power": 1,
        "outlier_threshold": 0.0,
        "outlier_mad_scale": 0.0,
    }


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        pytest.param("pca", {"rank": 2}, "model setting 'rank' is unknown", id="unknown-key"),
        pytest.param(
            "logistic", {"rank": 2}, "model 'logistic' takes no settings", id="no-settings"
        ),
        pytest.param(
            "linear", {"label_power": 0}, "'label_power' must be at least 1", id="label-power"
        ),
        pytest.param("pca", {"components": 0}, "'components' must be at least 1", id="minimum"),
        pytest.param("pca", {"components": 2.5}, "'components' expected an integer", id="type"),
        pytest.param(
            "factorisation", {"user_l2": 0.0}, "'user_l2' must be greater than 0.0", id="exclusive"
        ),
        pytest.param(
            "factorisation", {"init_scale": float("nan")}, "expected a finite number", id="nan"
        ),
    ],
)
def test_invalid_settings_rejected(name: str, settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_model(name, settings)  # type: ignore[arg-type]
