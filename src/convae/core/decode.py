"""Decode one image file with Pillow into a uint8 array, or say why it cannot be used.

Each file comes back in its natural form, H×W for gray or H×W×3 for colour, so the folder
loader can decide the channel count for the whole folder afterwards ("3 if any image is
colour"). Alpha is dropped (not composited); 16-bit gray is scaled to 8 bits.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

#: Refuse images with more pixels than this (decompression bombs, absurd scans); such files
#: are reported as bad and skipped, like truncated ones.
MAX_PIXELS = 50_000_000

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp"})

COLOUR_MODES_AS_IS = frozenset({"RGB"})
GRAY_MODES_VIA_L = frozenset({"1", "LA", "La"})
SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


class DataWarning(UserWarning):
    """A data file was skipped or changed on load; the message names the file."""


class BadImage(Exception):
    """Internal: the file cannot be decoded; the message is the reason (no path)."""


def _scale16(arr: np.ndarray) -> np.ndarray:
    """Map 0..65535 to 0..255 with rounding (v * 255 / 65535)."""
    a = np.clip(arr.astype(np.int64), 0, 65535)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _to_array(im: Image.Image) -> tuple[np.ndarray, bool]:
    """Return (uint8 array H×W or H×W×3, is_colour) for an opened, loaded image."""
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.uint8), False
    if mode in COLOUR_MODES_AS_IS:
        return np.asarray(im, dtype=np.uint8), True
    if mode in GRAY_MODES_VIA_L:
        return np.asarray(im.convert("L"), dtype=np.uint8), False
    if mode in SIXTEEN_BIT:
        return _scale16(np.asarray(im)), False
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and int(arr.max()) <= 255 and int(arr.min()) >= 0:
            return arr.astype(np.uint8), False
        return _scale16(arr), False
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if not np.isfinite(arr).all():  # NaN has no pixel value; guessing one would hide bad data
            raise BadImage(f"{int((~np.isfinite(arr)).sum())} pixel(s) are NaN or Inf")
        if arr.size and float(arr.max()) <= 1.0:
            arr = arr * 255.0
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8), False
    if mode in ("P", "PA"):
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return np.ascontiguousarray(rgb[..., 0]), False
        return rgb, True
    # RGBA, RGBX, RGBa, CMYK, YCbCr, LAB, HSV ...: Pillow knows how to get RGB.
    return np.asarray(im.convert("RGB"), dtype=np.uint8), True


# ITU-R 601-2 luma in 16-bit fixed point, exactly as Pillow's convert("L") computes it,
# so converting in the loader gives the same bytes as converting the file with Pillow.
LUMA_R, LUMA_G, LUMA_B = 19595, 38470, 7471


def gray_from_rgb(array: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 → H×W with Pillow's integer luma (the torch loaders use the same constants)."""
    x = array.astype(np.int64)
    return ((x[..., 0] * LUMA_R + x[..., 1] * LUMA_G + x[..., 2] * LUMA_B + 0x8000) >> 16).astype(np.uint8)


#: Smaller images carry no picture an autoencoder can learn from or be judged on: skipped as bad files.
MIN_SIDE = 2


#: EXIF orientations (5–8) that turn the picture a quarter: its stored H and W swap on screen.
QUARTER_TURNS = frozenset({5, 6, 7, 8})
EXIF_ORIENTATION = 0x0112


def orientation(im: Image.Image) -> int:
    """The EXIF orientation a viewer applies (1: as stored)."""
    try:
        return int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a damaged EXIF block: show it as stored, as viewers do
        return 1


def _say(note: str, path: str | os.PathLike[str], notes: list[str] | None) -> None:
    if notes is not None:
        notes.append(note)
    else:
        warnings.warn(f"{os.fspath(path)}: {note}", DataWarning, stacklevel=4)


def decode_image(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS,
                 notes: list[str] | None = None) -> tuple[np.ndarray, bool]:
    """Decode ``path`` to (uint8 array, is_colour) as a viewer shows it; raise :class:`BadImage` with a reason.

    The EXIF orientation is applied (a phone photo stored sideways comes out upright). An
    animated image gives its first frame and says so: in ``notes`` when the caller collects
    them, else as a DataWarning.
    """
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise BadImage(
                    f"{h}×{w} (H×W) = {w * h} pixels is more than the {max_pixels}-pixel limit"
                )
            if w == 0 or h == 0:
                raise BadImage(f"image has no pixels ({h}×{w}, H×W)")
            if min(w, h) < MIN_SIDE:
                raise BadImage(f"image is too small to use ({h}×{w} pixels, H×W; each side needs {MIN_SIDE} or more)")
            im.load()
            frames = int(getattr(im, "n_frames", 1) or 1)
            if frames > 1:
                _say(f"animated image: used the first of its {frames} frames", path, notes)
            turn = orientation(im)
            if turn != 1:
                im = ImageOps.exif_transpose(im)
            return _to_array(im)
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise BadImage(f"decompression bomb: {e}") from None
    except MemoryError:
        raise BadImage("out of memory while decoding") from None
    except Exception as e:
        text = str(e).strip().splitlines()
        reason = text[0] if text else type(e).__name__
        reason = reason.replace(f" {os.fspath(path)!r}", "")  # the caller names the file
        if os.path.exists(path) and os.path.getsize(path) == 0:
            reason = "empty file (0 bytes)"
        raise BadImage(reason) from None
