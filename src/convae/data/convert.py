"""Channel conversion and resizing of uint8 image tensors (N×C×H×W).

Shared by every loader so "--channels 3" or "--image-size 32 32" mean exactly the same
thing for MNIST, CIFAR-10 and image folders.
"""

from __future__ import annotations

from typing import Sequence

import torch

from convae.core.decode import LUMA_B as _LUMA_B
from convae.core.decode import LUMA_G as _LUMA_G
from convae.core.decode import LUMA_R as _LUMA_R
from convae.core.errors import DataError


def check_channels(channels: int | None) -> int | None:
    """Validate a requested channel count (None means: keep what the data has)."""
    if channels is None:
        return None
    if isinstance(channels, bool) or not isinstance(channels, int) or channels not in (1, 3):
        raise DataError(f"channels: {channels!r} is not supported (use 1 for gray or 3 for RGB)")
    return channels


def check_image_size(image_size: Sequence[int] | int | None) -> tuple[int, int] | None:
    """Validate a requested (H, W); a single int means a square image."""
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        h, w = (int(v) for v in image_size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise DataError(f"image_size: {image_size!r} is not a (height, width) pair") from None
    if h <= 0 or w <= 0 or h > 65535 or w > 65535:
        raise DataError(f"image_size: {h}×{w} is out of range (each side must be 1..65535)")
    return (h, w)


def rgb_to_gray(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×H×W → N×1×H×W with Pillow's integer ITU-R 601 luma (rounded)."""
    x = images.to(torch.int32)
    y = (x[:, 0] * _LUMA_R + x[:, 1] * _LUMA_G + x[:, 2] * _LUMA_B + 0x8000) >> 16
    return y.to(torch.uint8).unsqueeze(1).contiguous()


def to_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Convert uint8 N×C×H×W to the wanted channel count (gray is replicated to RGB)."""
    channels = check_channels(channels)
    c = images.shape[1]
    if channels is None or channels == c:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        return rgb_to_gray(images)
    raise DataError(f"cannot convert {c}-channel images to {channels} channels")


def resize_images(images: torch.Tensor, image_size: Sequence[int] | int | None) -> torch.Tensor:
    """Resize uint8 N×C×H×W to (H, W) with antialiased bilinear interpolation."""
    size = check_image_size(image_size)
    if size is None or tuple(images.shape[-2:]) == size:
        return images
    from torchvision.transforms.v2 import functional as F

    from convae.core.device import free_memory, gib

    n, c = images.shape[:2]
    need, free = n * c * size[0] * size[1], free_memory()
    if free is not None and need > free // 2:
        raise DataError(f"--image-size {size[0]}x{size[1]}: {n:,} images of {c}×{size[0]}×{size[1]} take "
                        f"{gib(need)} as uint8, and {gib(free)} of memory are free; use a smaller --image-size")
    out = F.resize(images, list(size), antialias=True)
    return out.contiguous()


def convert_images(
    images: torch.Tensor,
    channels: int | None = None,
    image_size: Sequence[int] | int | None = None,
) -> torch.Tensor:
    """Apply channel conversion then resizing (the order every loader uses)."""
    return resize_images(to_channels(images, channels), image_size)
