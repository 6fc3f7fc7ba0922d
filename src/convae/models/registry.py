"""Named model presets: a name, its parameters with defaults, and training defaults.

A registry (as in CompressAI) lets the CLI, the run directory and the docs all speak of
a model by name plus a few parameters, and rebuild exactly the same network later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from convae.core.errors import ModelError
from convae.models.autoencoder import AutoEncoder

Shape = tuple[int, int, int]
Builder = Callable[..., AutoEncoder]


@dataclass(frozen=True)
class Preset:
    """How to build one named model and how its reference example trained it."""

    name: str
    builder: Builder
    params: dict[str, Any]
    training: dict[str, Any]
    summary: str


PRESETS: dict[str, Preset] = {}


def register(name: str, *, params: dict[str, Any], training: dict[str, Any], summary: str):
    """Decorator: ``builder(input_shape, out_channels, **params) -> AutoEncoder``."""

    def wrap(builder: Builder) -> Builder:
        PRESETS[name] = Preset(name, builder, dict(params), dict(training), summary)
        return builder

    return wrap


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def resolve_params(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The preset's defaults with ``overrides`` applied and type-checked."""
    preset = get_preset(name)
    resolved = dict(preset.params)
    for key, value in (overrides or {}).items():
        if key not in preset.params:
            known = ", ".join(sorted(preset.params)) or "none"
            raise ModelError(f"model {name!r} has no parameter {key!r} (its parameters: {known})")
        resolved[key] = _coerce(name, key, value, preset.params[key])
    return resolved


def parse_model_args(name: str, pairs: list[str]) -> dict[str, Any]:
    """Turn ``["maps=3", "pool=2"]`` into typed parameters for preset ``name``."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ModelError(f"--model-arg {pair!r} is not KEY=VALUE")
        parsed[key.strip().replace("-", "_")] = value.strip()
    return resolve_params(name, parsed)


def _coerce(model: str, key: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError
            return text in {"true", "1", "yes"}
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, (tuple, list)):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(int(item) for item in items)
        return str(value)
    except (TypeError, ValueError):
        raise ModelError(
            f"model {model!r} parameter {key}={value!r} is not a valid {type(default).__name__}"
        ) from None


def build_model(
    name: str,
    input_shape: Shape,
    params: dict[str, Any] | None = None,
    out_channels: int | None = None,
    color_output: str | None = None,
) -> AutoEncoder:
    """Build preset ``name`` for inputs of ``input_shape`` (C, H, W).

    ``color_output`` picks a colorizer's output head (see convae.models.heads); None keeps
    the preset's own output.
    """
    from convae.models.heads import with_color_output

    preset = get_preset(name)
    resolved = resolve_params(name, params)
    channels, height, width = input_shape
    if min(input_shape) < 1:
        raise ModelError(f"input shape {channels}x{height}x{width} must be positive")
    model = preset.builder(tuple(input_shape), out_channels or channels, **resolved)
    return with_color_output(model, color_output, channels, out_channels or channels)


#: The preset a task trains when no --model is given: restoration wants a residual model that keeps
#: the input's every pixel (convae.models.restoration); the reference autoencoder stays the default
#: for reconstruction, and every preset stays available by name.
DEFAULT_MODELS = {"reconstruct": "conv", "denoise": "unet", "colorize": "unet", "inspect": "draem"}


def default_model(task: str | None) -> str:
    return DEFAULT_MODELS.get(task or "reconstruct", "conv")
