"""Settings files and what --resume may change: parsing and printing for `train` and `classify train`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from convae.core.errors import ConvaeError


def read_settings(path: Path) -> dict[str, Any]:
    """Settings from a TOML file, or from a run's config.json (its "training" section), to repeat a run."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConvaeError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConvaeError(f"{path}: cannot read it ({error})") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConvaeError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ConvaeError(f"{path}: not a settings object")
        settings = data.get("training", data)
        return {key: value for key, value in settings.items() if value is not None}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConvaeError(f"{path}: not valid TOML ({error})") from None
    return data.get("train", data)


def toml_text(settings: dict[str, Any]) -> str:
    """Resolved settings as TOML that --config reads back (tables last, unset values left out)."""

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, (int, float)):
            return repr(item)
        if isinstance(item, (list, tuple)):
            return "[" + ", ".join(value(v) for v in item) + "]"
        return json.dumps(str(item), ensure_ascii=False)

    lines = [f"{key} = {value(item)}" for key, item in settings.items()
             if item is not None and not isinstance(item, dict)]
    for key, table in settings.items():
        if isinstance(table, dict):
            lines += ["", f"[{key}]"] + [f"{k} = {value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def refuse_conflicts(conflicts: list[tuple[str, Any, Any]], run_dir: Path) -> None:
    """One line naming each flag that differs from the stored run, with both values."""
    if not conflicts:
        return
    parts = []
    for key, stored, given in conflicts:
        if isinstance(stored, dict):
            changed = [k for k in given if stored.get(k) != given.get(k)]
            parts.append(f"--model-arg {', '.join(f'{k}={given[k]}' for k in changed)} (this run: "
                         f"{', '.join(f'{k}={stored.get(k)}' for k in changed)})")
        else:
            parts.append(f"--{key.replace('_', '-')} {_show(given)} (this run: {_show(stored)})")
    raise ConvaeError(f"{run_dir}: --resume continues the run as it was trained, but {'; '.join(parts)} "
                      f"differ{'s' if len(parts) == 1 else ''}; drop the flag, or train a new run into another --out")


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if len(value) != 2 else f"{value[0]}x{value[1]}"
    return str(value)
