"""Small validators that name the offending field, e.g. ``sweep.space.lr.low``.

A config error should say *where* and *what*: ``sweep.space.lr.low: expected a number, got
'abc'``. Every reader of user input in the sweep package goes through these helpers so that the
messages look the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConfigError


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, Mapping) else "a table"


def fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise fail(where, f"expected a table, got {_show(value)}")
    return value


def number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(where, f"expected a number, got {_show(value)}")
    if not math.isfinite(value):
        raise fail(where, f"expected a finite number, got {value}")
    if positive and value <= 0:
        raise fail(where, f"expected a number > 0, got {value}")
    return float(value)


def integer(value: Any, where: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(where, f"expected an integer, got {_show(value)}")
    if minimum is not None and value < minimum:
        raise fail(where, f"expected an integer >= {minimum}, got {value}")
    return int(value)


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise fail(where, f"expected true or false, got {_show(value)}")
    return value


def string(value: Any, where: str, *, choices: Sequence[str] | None = None) -> str:
    if not isinstance(value, str):
        raise fail(where, f"expected a string, got {_show(value)}")
    if choices is not None and value not in choices:
        raise fail(where, f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def sequence(value: Any, where: str, *, non_empty: bool = True) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise fail(where, f"expected a list, got {_show(value)}")
    if non_empty and not value:
        raise fail(where, "expected a non-empty list")
    return list(value)


def unknown_keys(data: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    """Reject typos early: a misspelt key would otherwise be silently ignored."""
    extra = sorted(set(data) - set(known))
    if extra:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"{prefix}{extra[0]}: unknown key; expected one of {', '.join(sorted(known))}"
        )
