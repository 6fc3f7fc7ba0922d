"""Output-size arithmetic (arithmetic.py), the ConvTranspose2d solver (solver.py), sizes typed by users (sizes.py).

This package sits below the models, which derive their decoders from it; the layer table
and the solver's printed report need the models and live above them, in convae.tables.
"""

from convae.shapes.arithmetic import (
    conv2d_out,
    conv_transpose2d_out,
    layer_out,
    max_unpool2d_out,
    pool2d_out,
    upsample_out,
)
from convae.shapes.sizes import parse_hw, parse_size
from convae.shapes.solver import DeconvSetting, DeconvSetting2d, solve_conv_transpose, solve_conv_transpose_2d

__all__ = [
    "conv2d_out", "pool2d_out", "conv_transpose2d_out", "max_unpool2d_out", "upsample_out", "layer_out",
    "DeconvSetting", "DeconvSetting2d", "solve_conv_transpose", "solve_conv_transpose_2d", "parse_size", "parse_hw",
]
