"""Tests for gradchain.models.registry."""

from __future__ import annotations

import pytest

from gradchain.errors import ConfigError
from gradchain.models.logistic import LogisticRegression
from gradchain.models.registry import MODEL_NAMES, get_model


def test_get_model_logistic() -> None:
    assert isinstance(get_model("logistic"), LogisticRegression)


def test_model_names_lists_logistic() -> None:
    assert "logistic" in MODEL_NAMES


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("linear", id="not-registered"),
        pytest.param("Logistic", id="wrong-case"),
        pytest.param("", id="empty"),
    ],
)
def test_get_model_unknown_lists_known_names(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown model {name!r}, expected one of: 'logistic'"):
        get_model(name)
