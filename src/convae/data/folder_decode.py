"""Decoding a folder's files into uint8 pixels: in memory, or chunk by chunk into a mapped file.

Files decode in a thread pool, a chunk per task; unreadable ones are skipped with one
warning each. All images must share one size unless ``size`` resizes them or ``any_size``
keeps each at its own on a zero canvas of the largest height and width (patch training).
How long work is shown is the caller's: ``progress`` comes from above the data layer.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import numpy as np
import torch
from PIL import Image

from convae.core.decode import (
    COLOUR_MODES_AS_IS,
    GRAY_MODES_VIA_L,
    MAX_PIXELS,
    QUARTER_TURNS,
    SIXTEEN_BIT,
    BadImage,
    DataWarning,
    orientation,
)
from convae.core.decode import decode_image as decode_image
from convae.core.errors import DataError
from convae.data.convert import resize_images, to_channels
from convae.data.folder_layout import HOLDOUT_FRACTION, Layout

#: Modes convae.core.decode turns into gray (all others become RGB).
_GRAY_HEADER_MODES = frozenset({"L", "I", "F", *GRAY_MODES_VIA_L, *SIXTEEN_BIT})
#: Individual warnings for skipped files, then one summary line.
MAX_FILE_WARNINGS = 20
#: Files per thread-pool task. Small PNGs spend most of their time in Pillow's Python code
#: (which holds the GIL), so per-file tasks would cost more in hand-offs than they gain.
CHUNK = 256
#: ``progress(label, total)`` gives a context manager whose ``advance(n)`` counts files done.
Progress = Callable[[str, int], ContextManager[Any]]


class _Silent:
    def advance(self, count: int) -> None:
        pass


def no_progress(label: str, total: int) -> ContextManager[Any]:
    return nullcontext(_Silent())


def _try_decode(path: str) -> tuple[np.ndarray, bool] | str:
    try:
        return decode_image(path, MAX_PIXELS)
    except BadImage as e:
        return str(e)


def _decode_chunk(paths: list[str]) -> list[tuple[np.ndarray, bool] | str]:
    return [_try_decode(p) for p in paths]


def workers() -> int:
    return max(2, min(4, os.cpu_count() or 2))


def warn_skipped(root: Path, skipped: Sequence[Sequence[str]], stacklevel: int) -> None:
    """One warning per skipped file (the first MAX_FILE_WARNINGS), then a count.

    ``stacklevel`` is counted from this function, so the warning points at the caller of
    :func:`convae.data.folder.load_folder`.
    """
    for rel, reason in list(skipped)[:MAX_FILE_WARNINGS]:
        warnings.warn(f"{root / rel}: skipped, not a usable image ({reason})", DataWarning, stacklevel=stacklevel)
    if len(skipped) > MAX_FILE_WARNINGS:
        warnings.warn(f"{root}: {len(skipped)} files skipped in all ({len(skipped) - MAX_FILE_WARNINGS} more not listed)",
                      DataWarning, stacklevel=stacklevel)


def check_same_size(shapes: Sequence[tuple[int, int]], paths: Sequence[str]) -> None:
    """The one same-size check: the first image whose H×W differs from the first one's is named."""
    h0, w0 = shapes[0]
    for (h, w), path in zip(shapes, paths):
        if (h, w) != (h0, w0):
            raise DataError(f"{path}: image is {h}×{w} pixels (H×W) but {paths[0]} is {h0}×{w0}; all images must "
                            f"have the same size (pass --image-size {h0}x{w0} to resize them)")


def _no_images(root: Path, split: str) -> DataError:
    return DataError(f"{root}: no images for split {split!r} (too few files per class to hold out a "
                     f"{HOLDOUT_FRACTION:.0%} test split)")


def decode_all(
    root: Path, layout: Layout, split: str, channels: int | None, size: tuple[int, int] | None,
    any_size: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[tuple[str, str]], torch.Tensor | None]:
    """Decode every file of the split in memory; return (images, labels, ids, skipped, sizes).

    ``sizes`` holds each image's (H, W) when ``any_size`` kept them apart, else None.
    """
    if not layout.files:
        raise _no_images(root, split)
    paths = [str(root / rel) for rel, _ in layout.files]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=workers()) as pool:
            chunks = [paths[i: i + CHUNK] for i in range(0, len(paths), CHUNK)]
            results = [r for chunk in pool.map(_decode_chunk, chunks) for r in chunk]
    skipped = [(layout.files[i][0], r) for i, r in enumerate(results) if isinstance(r, str)]
    ok = [i for i, r in enumerate(results) if not isinstance(r, str)]
    warn_skipped(root, skipped, stacklevel=4)
    _check_some_kept(root, layout, split, ok)
    arrays = [results[i] for i in ok]
    shapes = [a[0].shape[:2] for a in arrays]  # type: ignore[index]
    ragged = any_size and size is None and len(set(shapes)) > 1
    if size is None and not ragged:
        check_same_size(shapes, [paths[i] for i in ok])
    target_c = channels or (3 if any(colour for _, colour in arrays) else 1)  # type: ignore[misc]
    canvas = size or ((max(h for h, _ in shapes), max(w for _, w in shapes)) if ragged else shapes[0])
    if not ragged:
        _warn_stretched(root, shapes, canvas)
    images = _assemble(arrays, target_c, size, canvas, ragged)  # type: ignore[arg-type]
    labels = torch.tensor([layout.files[i][1] for i in ok], dtype=torch.int64)
    sizes = torch.tensor(shapes, dtype=torch.int64) if ragged else None
    return images, labels, [layout.files[i][0] for i in ok], skipped, sizes


def _check_some_kept(root: Path, layout: Layout, split: str, ok: list[int]) -> None:
    if not ok:
        raise DataError(f"{root}: none of the {len(layout.files)} image files for split {split!r} could be read")
    missing = sorted({label for _, label in layout.files} - {layout.files[i][1] for i in ok})
    if missing:
        raise DataError(f"{layout.class_dirs[missing[0]]}: no readable images (every file was skipped)")


def _warn_stretched(root: Path, shapes: Sequence[tuple[int, int]], canvas: tuple[int, int]) -> None:
    """Said once per load, not once per image."""
    out_h, out_w = canvas
    stretched = sorted({(h, w) for h, w in shapes if abs(h / w - out_h / out_w) > 0.01 * out_h / out_w})
    if stretched:
        h, w = stretched[0]
        more = f" (and {len(stretched) - 1} other size(s))" if len(stretched) > 1 else ""
        warnings.warn(f"{root}: resizing {h}×{w} images{more} to {out_h}×{out_w} (H×W) changes their aspect ratio",
                      DataWarning, stacklevel=5)


def _assemble(arrays: list[tuple[np.ndarray, bool]], channels: int, size: tuple[int, int] | None,
              canvas: tuple[int, int], ragged: bool) -> torch.Tensor:
    """One N×C×H×W uint8 tensor, converting each group of same-shaped images at once."""
    groups: dict[tuple[int, int, bool], list[int]] = {}
    for pos, (arr, colour) in enumerate(arrays):
        groups.setdefault((arr.shape[0], arr.shape[1], colour), []).append(pos)
    out: torch.Tensor | None = None
    for (_, _, colour), positions in groups.items():
        stacked = torch.from_numpy(np.stack([arrays[p][0] for p in positions]))
        t = stacked.permute(0, 3, 1, 2) if colour else stacked.unsqueeze(1)
        t = resize_images(to_channels(t.contiguous(), channels), size)
        if len(groups) == 1 and not ragged:
            return t.contiguous()
        if out is None:
            out = (torch.zeros if ragged else torch.empty)((len(arrays), channels, *canvas), dtype=torch.uint8)
        index = torch.tensor(positions, dtype=torch.int64)
        if ragged:
            out[index, :, : t.shape[2], : t.shape[3]] = t
        else:
            out.index_copy_(0, index, t)
    assert out is not None
    return out


def header(path: str) -> tuple[int, int, bool] | str:
    """(H, W, colour) from a file's header, or why it is unusable. Colour follows
    convae.core.decode (palette images are looked at: a gray palette is gray)."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            height, width = image.height, image.width
            if orientation(image) in QUARTER_TURNS:  # shown turned a quarter: H and W swap
                height, width = width, height
            if mode in ("P", "PA"):
                colour = _try_decode(path)
                return (height, width, colour[1]) if not isinstance(colour, str) else colour
            return (height, width, mode in COLOUR_MODES_AS_IS or mode not in _GRAY_HEADER_MODES)
    except Exception:
        reason = _try_decode(path)
        return reason if isinstance(reason, str) else "unreadable header"


def plan_mapped(root: Path, layout: Layout, split: str, channels: int | None, size: tuple[int, int] | None,
                any_size: bool) -> dict[str, Any]:
    """From the files' headers alone: which are readable, the canvas and channels of a mapped decode."""
    paths = [str(root / rel) for rel, _ in layout.files]
    with ThreadPoolExecutor(max_workers=workers()) as pool:
        headers = list(pool.map(header, paths, chunksize=CHUNK))
    skipped = [(layout.files[i][0], h) for i, h in enumerate(headers) if isinstance(h, str)]
    ok = [i for i, h in enumerate(headers) if not isinstance(h, str)]
    if not ok:
        raise DataError(f"{root}: none of the {len(paths)} image files for split {split!r} could be read")
    shapes = [headers[i][:2] for i in ok]  # type: ignore[index]
    ragged = any_size and size is None and len(set(shapes)) > 1
    if size is None and not ragged:
        check_same_size(shapes, [paths[i] for i in ok])
    return {"paths": paths, "rel": [rel for rel, _ in layout.files], "ok": ok, "skipped": skipped,
            "ragged": ragged, "shapes": shapes,
            "channels": channels or (3 if any(headers[i][2] for i in ok) else 1),  # type: ignore[index]
            "canvas": size or (max(s[0] for s in shapes), max(s[1] for s in shapes))}


def fill_mapped(array: np.ndarray, plan: dict[str, Any], root: Path, size: tuple[int, int] | None,
                progress: Progress) -> list[int]:
    """Decode the planned files chunk by chunk into ``array``; the rows whose file failed after all."""
    paths, ok, (height, width) = plan["paths"], plan["ok"], plan["canvas"]
    failed: list[int] = []
    chunks = [ok[i:i + CHUNK] for i in range(0, len(ok), CHUNK)]
    row = 0
    with progress(root.name, len(ok)) as bar, ThreadPoolExecutor(max_workers=workers()) as pool:
        for chunk, decoded in zip(chunks, pool.map(_decode_chunk, ([paths[i] for i in c] for c in chunks))):
            for i, result in zip(chunk, decoded):
                if isinstance(result, str):
                    plan["skipped"].append((plan["rel"][i], result))
                    failed.append(row)
                else:
                    pixels, colour = result
                    t = torch.from_numpy(np.require(pixels, requirements=["C", "W"]))
                    t = (t.permute(2, 0, 1) if colour else t.unsqueeze(0)).unsqueeze(0)
                    t = resize_images(to_channels(t.contiguous(), plan["channels"]), size)[0]
                    if size is None and not plan["ragged"]:  # the header said one size, the pixels another
                        check_same_size([(height, width), tuple(t.shape[1:])], [paths[ok[0]], paths[i]])
                    array[row, :, : t.shape[1], : t.shape[2]] = t.numpy()
                row += 1
            bar.advance(len(chunk))
    return failed
