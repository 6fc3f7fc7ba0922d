"""Codes in and out of the model: encode to values and pool switches, quantize, dequantize, decode.

Bit-exactness: :func:`decode_codes` runs ``model.decode(dequantize(codes))`` in batches of
:data:`DECODE_BATCH`, so decoding a file gives, bit for bit, what
``model.decode(dequantize(quantize(model.encode(x))))`` gives in one process. The
``unpool`` presets' codes carry max-pool switches (the argmax position inside each pool
window); they are stored losslessly, so quantization touches only the values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from convae.applications.codes.format import BITS_CHOICES, CodeSet, SwitchLevel
from convae.core.errors import ConvaeError
from convae.models import SwitchedCode, code_values

DECODE_BATCH = 256


def check_same_run(codes: CodeSet, run_hash: str, codes_path: str | Path, run_dir: str | Path) -> None:
    """Refuse codes another run made: its decoder would silently draw nonsense."""
    if not run_hash.startswith(codes.weights_hash):
        raise ConvaeError(
            f"{codes_path}: these codes come from another run (weights hash {codes.weights_hash[:16]}), "
            f"not from {run_dir} (weights hash {run_hash[:16]}); decode them with the run that encoded them"
        )



@torch.no_grad()
def encode_batches(model: torch.nn.Module, images: torch.Tensor, device: torch.device | str = "cpu"
                   ) -> tuple[torch.Tensor, list[SwitchLevel]]:
    """Float codes N×… of uint8 images, and the pool switches (as window positions) for unpool presets."""
    values, levels = [], []
    for start in range(0, len(images), DECODE_BATCH):
        x = images[start:start + DECODE_BATCH].to(device).float().div(255)
        code = model.encode(x)
        values.append(code_values(code).float().cpu())
        if isinstance(code, SwitchedCode):
            levels.append([(window_positions(idx.cpu(), size, _kernel(model, i)), tuple(size), _kernel(model, i))
                           for i, (idx, size) in enumerate(code.switches)])
    switches = []
    if levels:
        for i in range(len(levels[0])):
            positions = np.concatenate([batch[i][0] for batch in levels])
            switches.append(SwitchLevel(positions, levels[0][i][2], (int(levels[0][i][1][0]), int(levels[0][i][1][1]))))
    if not values:
        raise ConvaeError("nothing to encode (no images)")
    return torch.cat(values), switches


def _kernel(model: torch.nn.Module, level: int) -> int:
    """Kernel of the level-th switch pair (innermost pool first), read from the model's pool layers."""
    from convae.models.blocks import PoolWithSwitches

    pools = [m.pool.kernel_size for m in model.modules() if isinstance(m, PoolWithSwitches)]
    kernel = pools[::-1][level]
    return int(kernel if isinstance(kernel, int) else kernel[0])


def window_positions(indices: torch.Tensor, size: Sequence[int], kernel: int) -> np.ndarray:
    """MaxPool2d flat argmax indices → the position 0..kernel²-1 inside each (stride = kernel) window."""
    _, _, h, w = indices.shape
    width = int(size[1])
    rows, cols = indices // width, indices % width
    di = rows - (torch.arange(h) * kernel).view(1, 1, h, 1)
    dj = cols - (torch.arange(w) * kernel).view(1, 1, 1, w)
    if bool(((di < 0) | (di >= kernel) | (dj < 0) | (dj >= kernel)).any()):
        raise ConvaeError("max-pool switches fall outside their windows; this model's pooling cannot be stored")
    return (di * kernel + dj).to(torch.uint8).numpy()


def flat_indices(level: SwitchLevel) -> torch.Tensor:
    """The inverse of :func:`window_positions`: MaxUnpool2d's flat indices."""
    pos = torch.from_numpy(level.positions.astype(np.int64))
    _, _, h, w = pos.shape
    k, width = level.kernel, level.pre_size[1]
    rows = (torch.arange(h) * k).view(1, 1, h, 1) + pos // k
    cols = (torch.arange(w) * k).view(1, 1, 1, w) + pos % k
    return rows * width + cols


def quantize(values: torch.Tensor, bits: int, run_hash: str, switches: list[SwitchLevel] | None = None,
             scales: tuple[np.ndarray, np.ndarray] | None = None) -> CodeSet:
    """Per code channel (dim 1) min/max quantization to ``bits`` bits; ``bits=32`` keeps float32.

    ``scales`` = (lo, step) reuses given scales (e.g. a whole set's, for one image of it).
    """
    if bits not in BITS_CHOICES:
        raise ConvaeError(f"--bits must be one of {', '.join(map(str, BITS_CHOICES))}, got {bits}")
    array = values.detach().cpu().float().numpy()
    if bits == 32:
        return CodeSet(array.astype(np.float32), 32, np.zeros(0, np.float32), np.zeros(0, np.float32), run_hash,
                       list(switches or []))
    channels = array.shape[1]
    per_channel = np.moveaxis(array, 1, 0).reshape(channels, -1)
    levels = 2**bits - 1
    if scales is None and per_channel.shape[1] == 0:  # no images: nothing to scale
        lo = step = np.zeros(channels, np.float32)
    elif scales is None:
        lo, step = half_scales(per_channel.min(axis=1), per_channel.max(axis=1), levels)
    else:
        lo, step = (np.asarray(s, np.float32) for s in scales)
    shape = (1, channels) + (1,) * (array.ndim - 2)
    safe = np.where(step > 0, step, 1).reshape(shape)
    q = np.rint((array - lo.reshape(shape)) / safe)
    q = np.where(step.reshape(shape) > 0, q, 0)
    return CodeSet(np.clip(q, 0, levels).astype(np.uint8), bits, lo, step, run_hash, list(switches or []))


def half_scales(lo: np.ndarray, hi: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (lo, step) that float16 represents exactly, with lo ≤ min and lo + levels·step ≥ max.

    The scales are stored as float16 (half the header of float32: it matters for a file of
    one image); rounding lo down and step up keeps every value inside the quantizer's range.
    """
    with np.errstate(over="ignore"):
        lo16 = lo.astype(np.float16)
        lo16 = np.where(lo16.astype(np.float32) > lo, np.nextafter(lo16, np.float16(-np.inf)), lo16)
        step = ((hi.astype(np.float32) - lo16.astype(np.float32)) / levels).astype(np.float32)
        step16 = step.astype(np.float16)
        step16 = np.where(step16.astype(np.float32) < step, np.nextafter(step16, np.float16(np.inf)), step16)
    if not (np.isfinite(lo16).all() and np.isfinite(step16).all()):
        raise ConvaeError("code values beyond ±65504 cannot be quantized with float16 scales; use --bits 32")
    return lo16.astype(np.float32), step16.astype(np.float32)


def dequantize(codes: CodeSet) -> torch.Tensor:
    """Float32 code values: ``lo + q · step`` per channel (the stored floats for ``bits=32``)."""
    if codes.bits == 32:
        return torch.from_numpy(np.ascontiguousarray(codes.q, dtype=np.float32))
    shape = (1, len(codes.lo)) + (1,) * (codes.q.ndim - 2)
    lo = torch.from_numpy(codes.lo.astype(np.float32)).view(shape)
    step = torch.from_numpy(codes.step.astype(np.float32)).view(shape)
    return lo + torch.from_numpy(codes.q.astype(np.float32)) * step


def model_code(codes: CodeSet, values: torch.Tensor, start: int, stop: int) -> torch.Tensor | SwitchedCode:
    """Rows start:stop of the dequantized values as the decoder takes them (with switches if any)."""
    part = values[start:stop]
    if not codes.switches:
        return part
    pairs = tuple((flat_indices(SwitchLevel(level.positions[start:stop], level.kernel, level.pre_size)),
                   torch.Size(level.pre_size)) for level in codes.switches)
    return SwitchedCode(part, pairs)


@torch.no_grad()
def decode_codes(model: torch.nn.Module, codes: CodeSet, device: torch.device | str = "cpu") -> torch.Tensor:
    """The model's raw output N×C×H×W for ``codes`` (not clamped), decoded in DECODE_BATCH batches."""
    values = dequantize(codes)
    outputs = []
    for start in range(0, len(codes), DECODE_BATCH):
        code = model_code(codes, values, start, start + DECODE_BATCH)
        if isinstance(code, SwitchedCode):
            code = SwitchedCode(code.values.to(device), tuple((i.to(device), s) for i, s in code.switches))
        else:
            code = code.to(device)
        outputs.append(model.decode(code).float().cpu())
    return torch.cat(outputs)


def check_code_shape(model: torch.nn.Module, codes: CodeSet, input_shape: Sequence[int], path: str | Path) -> None:
    with torch.no_grad():
        probe = code_values(model.encode(torch.zeros(1, *input_shape)))
    if tuple(probe.shape[1:]) != codes.code_shape:
        raise ConvaeError(f"{path}: codes of shape {codes.code_shape}, but this run's codes are {tuple(probe.shape[1:])}")


