"""Typed reading of one TOML table, with errors that locate the key."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gradchain.errors import SettingsFileError, TopologyError


def describe_value(value: object) -> str:
    """Return the TOML type of a parsed value, followed by the value when it is short."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return f"date/time {value.isoformat()}"
    return type(value).__name__


def join_ids(ids: Iterable[str], limit: int = 20) -> str:
    """Join ids with commas, cutting the list after ``limit`` entries."""
    listed = list(ids)
    text = ", ".join(listed[:limit])
    return text + ", ..." if len(listed) > limit else text


@dataclass(frozen=True)
class Table:
    """One TOML table being read, with the file, node id and key prefix that errors report.

    ``prefix`` is prepended to key names in errors, for example ``"job."``.
    ``node_id`` is set for a ``[[nodes]]`` table once its id is known.
    ``error_type`` is the exception the checks raise.
    """

    values: Mapping[str, object]
    file: str
    prefix: str = ""
    node_id: str | None = None
    error_type: type[SettingsFileError] = TopologyError

    def error(self, key: str, reason: str, fix: str | None = None) -> SettingsFileError:
        """Build an ``error_type`` exception located at ``key`` of this table."""
        return self.error_type(
            reason, path=self.file, node_id=self.node_id, key=self.prefix + key, fix=fix
        )

    def reject_unknown_keys(self, allowed: tuple[str, ...]) -> None:
        """Raise ``error_type`` for the first key that is not in ``allowed``."""
        for key in self.values:
            if key not in allowed:
                raise self.error(key, "unknown key", f"allowed keys: {', '.join(allowed)}")

    def _get(self, key: str, default: object, expected: str) -> object:
        if key in self.values:
            return self.values[key]
        if default is None:
            raise self.error(key, f"missing required key, expected {expected}")
        return default

    def _type_error(self, key: str, expected: str, value: object) -> SettingsFileError:
        return self.error(key, f"expected {expected}, got {describe_value(value)}")

    def get_int(self, key: str, default: int | None = None) -> int:
        """Return an integer value. ``default=None`` makes the key required."""
        value = self._get(key, default, "an integer")
        # bool is a subclass of int in Python, but `rounds = true` is a mistake.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._type_error(key, "an integer", value)
        return value

    def get_optional_int(self, key: str) -> int | None:
        """Return an integer value, or None when the key is absent."""
        if key not in self.values:
            return None
        return self.get_int(key)

    def get_float(self, key: str, default: float | None = None) -> float:
        """Return a finite number as a float, accepting integers.

        ``default=None`` makes the key required.
        """
        value = self._get(key, default, "a number")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._type_error(key, "a number", value)
        number = float(value)
        if not math.isfinite(number):
            raise self.error(key, f"expected a finite number, got {number}")
        return number

    def get_bool(self, key: str, default: bool | None = None) -> bool:
        """Return a boolean value. ``default=None`` makes the key required."""
        value = self._get(key, default, "true or false")
        if not isinstance(value, bool):
            raise self._type_error(key, "true or false", value)
        return value

    def get_str(self, key: str, default: str | None = None) -> str:
        """Return a non-empty string. ``default=None`` makes the key required."""
        value = self._get(key, default, "a string")
        if not isinstance(value, str):
            raise self._type_error(key, "a string", value)
        if not value:
            raise self.error(key, "expected a non-empty string, got an empty string")
        return value

    def get_optional_str(self, key: str) -> str | None:
        """Return a non-empty string, or None when the key is absent."""
        if key not in self.values:
            return None
        return self.get_str(key)

    def get_str_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Return an array of strings as a tuple."""
        value = self.values.get(key, default)
        if isinstance(value, tuple):
            return value
        if not isinstance(value, list):
            raise self._type_error(key, "an array of strings", value)
        for entry in value:
            if not isinstance(entry, str):
                raise self.error(
                    key, f"expected an array of strings, found {describe_value(entry)} in it"
                )
        return tuple(value)

    def require(self, key: str, condition: bool, reason: str, fix: str | None = None) -> None:
        """Raise ``error_type`` at ``key`` unless ``condition`` holds."""
        if not condition:
            raise self.error(key, reason, fix)
