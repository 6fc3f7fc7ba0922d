"""Load a folder of image files into an :class:`ImageSet`, decoded once and then cached.

Where the files are and which split each belongs to is folder_layout.py; decoding them is
folder_decode.py. This module decides where the pixels live: a cached in-memory decode
(``<cache>/folders/``, see :mod:`convae.data.folder_cache`), or, for a folder over the memory
budget, a memory-mapped file decoded once and shared by every process
(:mod:`convae.data.memmap_cache`). Extensions: .png .jpg .jpeg .bmp (any case). Unreadable
files are skipped with a :class:`DataWarning` naming each one.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from convae.core.decode import MAX_PIXELS, DataWarning
from convae.core.device import gib
from convae.core.errors import DataError
from convae.data import folder_cache, memmap_cache
from convae.data.convert import check_channels, check_image_size
from convae.data.folder_decode import (
    Progress,
    decode_all,
    fill_mapped,
    header,
    no_progress,
    plan_mapped,
    warn_skipped,
)
from convae.data.folder_layout import HOLDOUT_FRACTION, SPLIT_FOLDERS, Layout, discover
from convae.data.imageset import ImageSet
from convae.data.paths import cache_root

__all__ = ["HOLDOUT_FRACTION", "SPLIT_FOLDERS", "load_folder"]


def load_folder(
    path: str | os.PathLike[str],
    split: str = "train",
    channels: int | None = None,
    image_size: Sequence[int] | int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    any_size: bool = False,
    progress: Progress = no_progress,
) -> ImageSet:
    """Load one split of an image folder (layouts in convae.data.folder_layout).

    ``channels``: 1 or 3 (default: 3 if any image is colour, else 1). ``image_size``:
    (H, W) to resize every image to; without it all images must have the same size, or,
    with ``any_size`` (patch training), each keeps its own (``ImageSet.sizes``).
    The result is cached in ``<cache>/folders/``; ``cache_dir`` overrides the cache root.
    ``progress`` shows a long decode into the mapped cache (the caller's bar; none by default).
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected a folder of images)")
    channels = check_channels(channels)
    size = check_image_size(image_size)
    layout = discover(root, split)
    name = f"folder:{root}"
    key = folder_cache.cache_key(
        path=os.path.abspath(root), split=split, channels=channels, image_size=size, kind=layout.kind,
        classes=layout.classes, holdout=HOLDOUT_FRACTION, max_pixels=MAX_PIXELS,
        files=folder_cache.fingerprint(layout.fingerprint_files), **({"any_size": True} if any_size else {}),
    )
    cpath = folder_cache.cache_path(cache_root(cache_dir), key)
    mapped = cpath.with_suffix(".u8")
    opened = memmap_cache.open_mapped(mapped)
    if opened is not None:
        warn_skipped(root, opened[1].get("skipped", []), stacklevel=3)
        return _mapped_set(*opened, split, name, mapped)
    needed = _decoded_bytes(root, layout, channels, size)
    if needed > memmap_cache.memory_budget():
        _check_disk_room(root, mapped.parent, needed, len(layout.files), channels, size)
        with memmap_cache.exclusive(mapped.with_name(mapped.name + ".lock")):
            opened = memmap_cache.open_mapped(mapped)  # another rank may have made it while this one waited
            if opened is not None:
                return _mapped_set(*opened, split, name, mapped)
            return _decode_to_mapped(root, layout, split, channels, size, any_size, mapped, needed, progress)
    hit = folder_cache.load(cpath)
    if hit is not None:
        images, labels, meta = hit
        warn_skipped(root, meta.get("skipped", []), stacklevel=3)
        sizes = torch.tensor(meta["sizes"], dtype=torch.int64) if meta.get("sizes") else None
        return ImageSet(images, labels, meta["classes"], split, name, ids=meta["ids"], sizes=sizes)
    images, labels, ids, skipped, sizes = decode_all(root, layout, split, channels, size, any_size)
    folder_cache.save(cpath, images, labels, {
        "source": os.path.abspath(root), "split": split, "classes": layout.classes, "ids": ids,
        "skipped": skipped, "sizes": sizes.tolist() if sizes is not None else None})
    return ImageSet(images, labels, layout.classes, split, name, ids=ids, sizes=sizes)


def _decoded_bytes(root: Path, layout: Layout, channels: int | None, size: tuple[int, int] | None) -> int:
    """About how many bytes the split takes decoded: from the first file's header (all images
    share one size, or are resized to ``size``), at 3 channels unless ``channels`` says."""
    if not layout.files:
        return 0
    if size is None:
        for rel, _ in layout.files[:8]:
            first = header(str(root / rel))
            if not isinstance(first, str):
                size = first[:2]
                break
        else:
            return 0
    return len(layout.files) * (channels or 3) * size[0] * size[1]


def _decode_to_mapped(root: Path, layout: Layout, split: str, channels: int | None, size: tuple[int, int] | None,
                      any_size: bool, path: Path, needed: int, progress: Progress) -> ImageSet:
    """Decode the split chunk by chunk straight into a memory-mapped file (memory stays bounded)."""
    plan = plan_mapped(root, layout, split, channels, size, any_size)
    ok = plan["ok"]
    warnings.warn(f"{root}: {len(ok):,} images take {gib(needed)} decoded, more than the memory budget "
                  f"({gib(memmap_cache.memory_budget())}, $CONVAE_MEMORY_BUDGET); decoding them once into "
                  f"the memory-mapped cache {path}", DataWarning, stacklevel=4)
    meta: dict[str, Any] = {"source": os.path.abspath(root), "split": split, "classes": layout.classes,
                            "ids": [layout.files[i][0] for i in ok], "labels": [layout.files[i][1] for i in ok],
                            "sizes": [list(plan["shapes"][j]) for j in range(len(ok))] if plan["ragged"] else None}

    def fill(array: np.ndarray) -> list[int]:
        failed = fill_mapped(array, plan, root, size, progress)
        gone = set(failed)
        for key in ("ids", "labels", "sizes"):
            if meta[key] is not None:
                meta[key] = [v for j, v in enumerate(meta[key]) if j not in gone]
        meta["skipped"] = plan["skipped"]
        return failed

    images, meta = memmap_cache.write_mapped(path, (len(ok), plan["channels"], *plan["canvas"]), fill, meta)
    warn_skipped(root, plan["skipped"], stacklevel=4)
    return _mapped_set(images, meta, split, f"folder:{root}", path)


def _check_disk_room(root: Path, folder: Path, needed: int, count: int, channels: int | None,
                     size: tuple[int, int] | None) -> None:
    """One line before decoding when neither memory nor the cache's disk can hold the decoded images."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed <= free:
        return
    what = f"--image-size {size[0]}x{size[1]}: {count:,} images of {channels or 3}×{size[0]}×{size[1]}" if size \
        else f"{root}: {count:,} images"
    raise DataError(f"{what} take {gib(needed)} as uint8, more than the memory budget "
                    f"({gib(memmap_cache.memory_budget())}) and than the {gib(free)} free for the memory-mapped cache "
                    f"in {folder}{'; use a smaller --image-size' if size else ''}")


def _mapped_set(images: torch.Tensor, meta: dict, split: str, name: str, path: Path) -> ImageSet:
    if len(images) == 0:
        raise DataError(f"{meta.get('source')}: no readable images for split {split!r}")
    sizes = torch.tensor(meta["sizes"], dtype=torch.int64) if meta.get("sizes") else None
    return ImageSet(images, torch.tensor(meta["labels"], dtype=torch.int64), meta["classes"], split, name,
                    ids=meta["ids"], sizes=sizes, backing=str(path))
