"""Autoencoder models: the AutoEncoder class, its building blocks and named presets."""

from convae.models import codec as _codec  # noqa: F401  (registers the codec presets)
from convae.models import draem as _draem  # noqa: F401  (registers the DRAEM presets)
from convae.models import presets as _presets  # noqa: F401  (registers the presets)
from convae.models import restoration as _restoration  # noqa: F401  (registers the restoration presets)
from convae.models.autoencoder import AutoEncoder, SwitchedCode, code_values
from convae.models.registry import (
                                    DEFAULT_MODELS,
                                    PRESETS,
                                    Preset,
                                    build_model,
                                    default_model,
                                    get_preset,
                                    parse_model_args,
                                    resolve_params,
)

__all__ = [
    "AutoEncoder",
    "SwitchedCode",
    "code_values",
    "DEFAULT_MODELS",
    "PRESETS",
    "Preset",
    "build_model",
    "default_model",
    "get_preset",
    "parse_model_args",
    "resolve_params",
]
