"""Every value a user can give a run, checked once: its type and range, naming where it came from.

A setting reaches a run from a flag (``--epochs``), a settings file (``exp.toml: epochs``) or a
stored run (``RUN/config.json: training.epochs``). The configs keep that origin per key
(:class:`Sources`), so one bad value gets one line that names the place a user can fix it,
never a flag they did not type. The checks are strict where a loose one would train something
else than asked: a float is no integer (``epochs = 1.5``), a boolean is no number
(``lr = true``), and a count of threads or epochs is at least 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from convae.core.errors import ConvaeError
from convae.shapes import parse_hw


class Sources(dict):
    """key → where its value came from, for messages; a key not in it came from its flag."""

    def where(self, key: str) -> str:
        return self.get(key) or f"--{key.replace('_', '-')}"

    def mark(self, keys: Any, origin: str, within: str = "") -> None:
        """Each key came from the file ``origin`` ("exp.toml: epochs"), under ``within`` for a nested
        section ("RUN/config.json: training.epochs")."""
        for key in keys:
            self[key] = f"{origin}: {within}{key}"


@dataclass(frozen=True)
class Field:
    """What one setting may hold: a kind and, for numbers, a range; for text, its choices."""

    kind: str  # "int", "float", "bool", "str", "size", "classes", "table", "duration"
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    low_open: bool = False
    choices: tuple[Any, ...] = ()

    def check(self, value: Any, where: str) -> Any:
        """The value as the config holds it, or a one-line ConvaeError naming ``where``."""
        value = _KINDS[self.kind](value, where)
        if self.kind in ("int", "float"):
            self._in_range(value, where)
        if self.choices and value not in self.choices:
            raise ConvaeError(f"{where} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        return value

    def _in_range(self, value: float, where: str) -> None:
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        if low_ok and high_ok:
            return
        if self.high is None:
            if self.low == 0 and self.low_open:
                raise ConvaeError(f"{where} must be a positive number, got {value}")
            raise ConvaeError(f"{where} must be at least {_number(self.low)}, got {value}")
        brackets = ("(" if self.low_open else "[", ")" if self.high_open else "]")
        raise ConvaeError(f"{where} must be in {brackets[0]}{_number(self.low)}, {_number(self.high)}{brackets[1]}, "
                          f"got {value}")


def _number(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConvaeError(f"{where} must be a whole number, got {value!r}")
    return value


def _real(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConvaeError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConvaeError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConvaeError(f"{where} must be true or false, got {value!r}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConvaeError(f"{where} must be text, got {value!r}")
    return value


def _size(value: Any, where: str) -> tuple[int, int]:
    """H, HxW, or [H, W]: the one place an image size is checked."""
    if isinstance(value, str):
        return parse_hw(value, what=where)
    if not isinstance(value, bool) and isinstance(value, int):
        value = (value, value)
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
        raise ConvaeError(f"{where} must be H or HxW in positive whole pixels, got {value!r}")
    return (value[0], value[1])


def _classes(value: Any, where: str) -> list[int | str]:
    """``0,2``, ``cat,dog`` or a list of both: indices stay numbers, names are matched later."""
    if isinstance(value, str):
        value = [int(part) if part.strip().isdigit() else part.strip() for part in value.split(",") if part.strip()]
    if (not isinstance(value, (list, tuple)) or not value
            or any(isinstance(v, bool) or not isinstance(v, (int, str)) for v in value)):
        raise ConvaeError(f"{where} needs at least one class, as an index or a name (e.g. 0,1 or cat,dog)")
    return list(value)


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def _duration(value: Any, where: str) -> float:
    """Seconds from ``90s``, ``10m``, ``2h``, ``1h30m`` (or a number of seconds); more than zero."""
    seconds = None
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (found := _DURATION.match(value.strip().lower())) and any(found.groups()):
        hours, minutes, secs = (float(v) if v else 0.0 for v in found.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ConvaeError(f"{where} must be a time longer than zero, like 90s, 10m, 2h or 1h30m, got {value!r}")
    return seconds


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConvaeError(f"{where} must be a table of KEY = VALUE, got {value!r}")
    return dict(value)


_KINDS = {"int": _integer, "float": _real, "bool": _boolean, "str": _text, "size": _size, "classes": _classes,
          "table": _table, "duration": _duration}


def check_fields(values: dict[str, Any], fields: dict[str, Field], sources: Sources) -> dict[str, Any]:
    """Every value that is set, checked against its field; None means "the default" and passes."""
    return {key: (fields[key].check(value, sources.where(key)) if value is not None and key in fields else value)
            for key, value in values.items()}
