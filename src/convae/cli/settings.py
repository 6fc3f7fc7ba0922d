"""One path for a run's settings, shared by `train` and `classify train`.

:func:`plan_run` merges a settings file (TOML, or a run's config.json to repeat it),
``--set KEY=VALUE`` and the flags (flags win), remembers where each value came from, and on
``--resume`` adopts the stored run, refusing a flag that would change what it computes. It
names the output folder when none is given. The checks themselves are the configs'
(convae.run.config), so a value is checked the same way whichever path it took.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from convae.core.errors import ConvaeError
from convae.run.fields import Sources, check_fields


def plan_run(cls: Any, flags: dict[str, Any], *, config: Path | None, sets: list[str] | None, out_dir: Path | None,
             resume: bool, verb: str, kind: str, prefix: str = "", model_pairs: list[str] | None = None,
             print_config: bool = False) -> tuple[Any, Path]:
    """(the run's config, its folder) for ``cls`` (TrainConfig or ClassifyConfig)."""
    settings, sources = file_settings(config)
    for key, value in parse_sets(sets or []).items():
        settings[key], sources[key] = value, f"--set {key}"
    for key, value in flags.items():
        if value is not None:
            settings[key] = value
            sources.pop(key, None)
    out_path = Path(out_dir or settings.pop("out", "") or "")
    settings.pop("out", None)
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)} - {"sources"})
    if unknown:
        raise ConvaeError(f"{config or '--set'}: unknown option(s) {', '.join(unknown)}")
    settings = check_fields(settings, cls.FIELDS, sources)
    if resume:
        return _resumed(cls, settings, out_dir, verb, kind, model_pairs), out_path
    if model_pairs is not None:
        from convae.models import default_model

        settings["model_args"] = _model_args(settings, model_pairs, settings.get("model") or default_model(settings.get("task")))
    cfg = cls(**settings, sources=sources)
    if not out_dir and not print_config:
        out_path = default_out(cfg, prefix)
    return cfg, out_path


def config_flags(values: dict[str, Any], cls: Any, **renamed: str) -> dict[str, Any]:
    """The flags of a verb that are settings of ``cls``, by name (``renamed``: field=parameter)."""
    names = {f.name for f in dataclasses.fields(cls)} - {"sources"}
    picked = {key: values.get(renamed.get(key, key)) for key in names}
    return {key: str(value) if isinstance(value, Path) else value for key, value in picked.items() if value is not None}


def file_settings(path: Path | None) -> tuple[dict[str, Any], Sources]:
    sources = Sources()
    if path is None:
        return {}, sources
    settings = read_settings(path)
    sources.mark(settings, str(path))
    return settings, sources


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``--set lr=0.01 --set image_size=[64, 48]``: any setting by its config name, as a TOML value
    (a bare word is text)."""
    tomllib = _toml()
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConvaeError(f"--set {pair!r} is not KEY=VALUE")
        try:
            values[key] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            values[key] = text.strip()
    return values


def _model_args(settings: dict[str, Any], pairs: list[str], model: str) -> dict[str, Any]:
    """A settings file's [model_args] table and the --model-arg pairs, typed for ``model``."""
    from convae.models import parse_model_args

    raw = settings.pop("model_args", None) or {}
    joined = [f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in raw.items()]
    return parse_model_args(model, joined + list(pairs)) if joined or pairs else {}


def _resumed(cls: Any, given: dict[str, Any], out_dir: Path | None, verb: str, kind: str,
             model_pairs: list[str] | None) -> Any:
    """The stored run, with only how it is carried out (RUNTIME) taken from ``given``."""
    from convae.run import Run
    from convae.run.config import RUNTIME

    if not out_dir:
        raise ConvaeError("--resume needs --out RUN_DIR (the run to continue)")
    if not (out_dir / "config.json").exists():
        raise ConvaeError(f"{out_dir}: nothing to resume (no config.json there); train without --resume first")
    run = Run.open(out_dir, kind=kind, verb=f"{verb} --resume", weights=False)
    stored = cls.from_stored(run.config.raw, origin=str(out_dir / "config.json"))
    classes = run.config.get("dataset", {}).get("classes") or []
    if given.get("normal_classes"):  # names, as the first command may have given them, mean the stored indices
        given["normal_classes"] = [classes.index(c) if isinstance(c, str) and c in classes else c
                                   for c in given["normal_classes"]]
    if model_pairs is not None:
        args = _model_args(given, model_pairs, given.get("model", stored.model))
        if args:
            given["model_args"] = args
    refuse_conflicts(stored.conflicts(given), out_dir)
    # --max-time is this command's choice: left out, the run trains on without a limit.
    return dataclasses.replace(stored, **{key: given[key] for key in RUNTIME if key in given and key != "max_time"},
                               max_time=given.get("max_time"))


def default_out(cfg: Any, prefix: str) -> Path:
    """runs/PREFIX-MODEL-DATASET-TIME, from any folder; under torchrun every process must be told."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConvaeError("under torchrun, give --out RUN_DIR so every process trains into the same run")
    from convae.models import default_model
    from convae.run.config import TrainConfig

    dataset = cfg.dataset
    if dataset is None and isinstance(cfg, TrainConfig):  # a classifier's default, mnist, needs no look
        from convae.data import default_dataset

        dataset = cfg.dataset = default_dataset(cfg.data_dir)
    name = str(dataset or "mnist").replace(":", "-").replace("/", "_")
    return Path("runs") / f"{prefix}{cfg.model or default_model(cfg.task)}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"


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
    tomllib = _toml()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConvaeError(f"{path}: not valid TOML ({error})") from None
    return data.get("train", data)


def _toml() -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib


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
