"""Writing images and naming output files: the one place every verb that writes pictures uses.

Outputs of the file verbs (denoise, colorize, decode, detect heatmaps) are 8-bit PNGs
written atomically, named after their inputs, and never allowed to overwrite each other.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from convae.core.atomic import atomic_write_bytes

#: ITU-R 601 luma weights: the gray a colorization model sees and the luma a chroma head keeps.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luma(x: torch.Tensor) -> torch.Tensor:
    """N×3×H×W → N×1×H×W ITU-R 601 luma (a 1-channel input is returned as it is)."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(LUMA_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x[:, :3] * weights).sum(1, keepdim=True)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (clamped) → uint8, rounded."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


def png_bytes(image: torch.Tensor | np.ndarray) -> bytes:
    """An 8-bit gray or RGB PNG of ``image``: a C×H×W tensor (float in [0, 1] or uint8) or an
    H×W / H×W×C uint8 array."""
    from PIL import Image

    if isinstance(image, torch.Tensor):
        pixels = image if image.dtype == torch.uint8 else to_uint8(image)
        array = pixels.detach().cpu().permute(1, 2, 0).contiguous().numpy()
    else:
        array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    from PIL.PngImagePlugin import PngInfo

    from convae.core.outputs import PNG_MARK

    info = PngInfo()
    info.add_text(*PNG_MARK)  # how a later run knows this picture is convae's to overwrite
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L" if array.ndim == 2 else "RGB").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def write_png(path: str | Path, image: torch.Tensor | np.ndarray) -> Path:
    """Write ``image`` (see :func:`png_bytes`) as a PNG, atomically; returns the path.

    Not fsynced: a picture can be made again, and 10,000 restored images spent most of their
    time in fsync. The rename still means a reader never sees half a file."""
    atomic_write_bytes(Path(path), png_bytes(image), sync=False)
    return Path(path)


class UniqueNames:
    """Hands out output names so no two inputs write one file: ``a.png``, ``a-2.png``, ``a-3.png`` …

    Names are compared as given (relative paths or whole paths); the number goes before the
    suffix, so ``dir/x.png`` becomes ``dir/x-2.png`` and a bare ``x`` becomes ``x-2``.
    """

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def take(self, name: str) -> str:
        suffix = PurePosixPath(name).suffix
        stem = (name[: -len(suffix)] if suffix else name) or "image"
        candidate, number = (name if name and name != suffix else f"{stem}{suffix}"), 2
        while candidate in self.taken:
            candidate, number = f"{stem}-{number}{suffix}", number + 1
        self.taken.add(candidate)
        return candidate
