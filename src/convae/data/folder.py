"""Load a folder of image files into an :class:`ImageSet`, decoded once and then cached.

Layouts (checked in this order):

1. ``PATH/train/<class>/*.png`` and ``PATH/test/<class>/*.png`` — split folders present.
   The class list is the sorted union of the class folders of all split folders, so a
   label means the same class in every split.
2. ``PATH/<class>/*.png`` — no split folders. convae holds out a deterministic 10% of each
   class as the ``test`` split: the files of a class are ranked by the sha1 of their
   relative path and the first ``round(n / 10)`` (at least 1 when the class has 2 or more
   files) are test, the rest train. The split of a file never depends on run seeds.
3. ``PATH/*.png`` — a flat folder: one class named after the folder, label 0, with the
   same 10% hold-out.

Files are found recursively inside a class folder; hidden files and folders are ignored.
Extensions: .png .jpg .jpeg .bmp (any case). Unreadable files are skipped with a
:class:`DataWarning` naming each one. Decoded pixels are cached as safetensors under
``<cache>/folders/`` (see :mod:`convae.data.folder_cache`).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from convae.core.decode import (
    COLOUR_MODES_AS_IS,
    GRAY_MODES_VIA_L,
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    SIXTEEN_BIT,
    BadImage,
    DataWarning,
    decode_image,
)
from convae.core.device import gib
from convae.core.errors import DataError
from convae.data import folder_cache, memmap_cache
from convae.data.convert import (
    check_channels,
    check_image_size,
    resize_images,
    to_channels,
)
from convae.data.imageset import ImageSet
from convae.data.paths import cache_root

SPLIT_FOLDERS = ("train", "test", "val", "valid", "validation")
HOLDOUT_FRACTION = 0.1
#: Modes convae.core.decode turns into gray (all others become RGB).
_GRAY_HEADER_MODES = frozenset({"L", "I", "F", *GRAY_MODES_VIA_L, *SIXTEEN_BIT})
#: Individual warnings for skipped files, then one summary line.
MAX_FILE_WARNINGS = 20


@dataclass
class _Layout:
    """What was found on disk for one split, before any decoding."""

    kind: str  # "split", "classes" or "flat"
    classes: list[str]
    files: list[tuple[str, int]] = field(default_factory=list)  # (relative path, label)
    class_dirs: list[Path] = field(default_factory=list)  # per class; for error messages
    fingerprint_files: list[tuple[str, int, int]] = field(default_factory=list)


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _subdirs(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if _visible(e.name) and e.is_dir())
    except OSError as e:
        raise DataError(f"{folder}: cannot list folder ({e.strerror or e})") from None


def _walk_images(folder: Path, base: Path, recursive: bool = True) -> list[tuple[str, int, int]]:
    """Image files under ``folder`` as sorted (path relative to ``base``, size, mtime_ns)."""
    found: list[tuple[str, int, int]] = []
    prefix = Path(os.path.relpath(folder, base)).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    pending = [(str(folder), prefix)]
    seen: set[tuple[int, int]] = set()  # (device, inode) of folders walked: symlink loops end here
    while pending:
        dirpath, rel_prefix = pending.pop()
        try:
            st_dir = os.stat(dirpath)
        except OSError as e:
            raise DataError(f"{dirpath}: cannot list folder ({e.strerror or e})") from None
        if (st_dir.st_dev, st_dir.st_ino) in seen:
            continue
        seen.add((st_dir.st_dev, st_dir.st_ino))
        try:
            with os.scandir(dirpath) as it:
                entries = list(it)
        except OSError as e:
            raise DataError(f"{dirpath}: cannot list folder ({e.strerror or e})") from None
        for entry in entries:
            name = entry.name
            if not _visible(name):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if recursive:
                    pending.append((entry.path, rel_prefix + name + "/"))
                continue
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            try:
                st = entry.stat()
                found.append((rel_prefix + name, st.st_size, st.st_mtime_ns))
            except OSError:  # e.g. a broken symlink: keep it, decoding will report it
                found.append((rel_prefix + name, -1, 0))
    found.sort()
    return found


def _n_test(n: int) -> int:
    """How many of a class's n files the automatic hold-out puts in the test split."""
    if n < 2:
        return 0
    return max(1, int(n * HOLDOUT_FRACTION + 0.5))


def _holdout(files: list[tuple[str, int, int]], split: str) -> list[tuple[str, int, int]]:
    """Deterministic per-class split: rank by sha1(relative path), first _n_test are test."""
    ranked = sorted(files, key=lambda f: hashlib.sha1(f[0].encode("utf-8", "surrogateescape")).hexdigest())
    k = _n_test(len(files))
    chosen = ranked[:k] if split == "test" else ranked[k:]
    return sorted(chosen)


def _discover(root: Path, split: str) -> _Layout:
    subdirs = _subdirs(root)
    split_dirs = [d for d in subdirs if d in SPLIT_FOLDERS]
    if "train" in split_dirs or "test" in split_dirs:
        return _discover_split(root, split, split_dirs)
    if split not in ("train", "test"):
        raise DataError(
            f"{root}: split {split!r} is not available: the folder has no train/test folders, "
            f"so convae holds out {HOLDOUT_FRACTION:.0%} of each class as 'test' "
            "(use split 'train' or 'test')"
        )
    if subdirs:
        loose = _walk_images(root, root, recursive=False)
        if loose:
            warnings.warn(
                f"{root}: ignoring {len(loose)} image files next to the class folders "
                f"(first: {loose[0][0]})",
                DataWarning,
                stacklevel=3,
            )
        layout = _Layout(kind="classes", classes=subdirs)
        for label, cls in enumerate(subdirs):
            cdir = root / cls
            files = _walk_images(cdir, root)
            if not files:
                raise DataError(f"{cdir}: empty class folder (no .png/.jpg/.jpeg/.bmp files)")
            layout.fingerprint_files += files
            layout.class_dirs.append(cdir)
            layout.files += [(rel, label) for rel, _, _ in _holdout(files, split)]
        return layout
    files = _walk_images(root, root, recursive=False)
    if not files:
        raise DataError(f"{root}: no image files (.png, .jpg, .jpeg, .bmp) and no class folders")
    layout = _Layout(kind="flat", classes=[root.resolve().name or "images"], class_dirs=[root])
    layout.fingerprint_files = files
    layout.files = [(rel, 0) for rel, _, _ in _holdout(files, split)]
    return layout


def _discover_split(root: Path, split: str, split_dirs: list[str]) -> _Layout:
    if split not in split_dirs:
        raise DataError(
            f"{root}: no {split!r} folder (split folders found: {', '.join(split_dirs)})"
        )
    sdir = root / split
    classes = sorted({c for d in split_dirs for c in _subdirs(root / d)})
    here = _subdirs(sdir)
    if not here:  # PATH/train/*.png: one class per split folder set
        files = _walk_images(sdir, root, recursive=False)
        if not files:
            raise DataError(f"{sdir}: no image files and no class folders")
        layout = _Layout(kind="split", classes=[root.resolve().name or "images"], class_dirs=[sdir])
        layout.fingerprint_files = files
        layout.files = [(rel, 0) for rel, _, _ in files]
        return layout
    layout = _Layout(kind="split", classes=classes)
    for label, cls in enumerate(classes):
        cdir = sdir / cls
        layout.class_dirs.append(cdir)
        if not cdir.is_dir():
            continue  # this class only exists in another split
        files = _walk_images(cdir, root)
        if not files:
            raise DataError(f"{cdir}: empty class folder (no .png/.jpg/.jpeg/.bmp files)")
        layout.fingerprint_files += files
        layout.files += [(rel, label) for rel, _, _ in files]
    return layout


def _try_decode(path: str) -> tuple[np.ndarray, bool] | str:
    try:
        return decode_image(path, MAX_PIXELS)
    except BadImage as e:
        return str(e)


def _decode_chunk(paths: list[str]) -> list[tuple[np.ndarray, bool] | str]:
    return [_try_decode(p) for p in paths]


#: Files per thread-pool task. Small PNGs spend most of their time in Pillow's Python code
#: (which holds the GIL), so per-file tasks would cost more in hand-offs than they gain.
_CHUNK = 256


def _warn_skipped(root: Path, skipped: Sequence[Sequence[str]], stacklevel: int) -> None:
    """One warning per skipped file (the first MAX_FILE_WARNINGS), then a count.

    ``stacklevel`` is counted from this function, so the warning points at the caller of
    :func:`load_folder`.
    """
    for rel, reason in list(skipped)[:MAX_FILE_WARNINGS]:
        warnings.warn(f"{root / rel}: skipped, not a usable image ({reason})", DataWarning, stacklevel=stacklevel)
    if len(skipped) > MAX_FILE_WARNINGS:
        warnings.warn(
            f"{root}: {len(skipped)} files skipped in all ({len(skipped) - MAX_FILE_WARNINGS} "
            "more not listed)",
            DataWarning,
            stacklevel=stacklevel,
        )


def _workers() -> int:
    return max(2, min(4, os.cpu_count() or 2))


def _decode_all(
    root: Path, layout: _Layout, split: str, channels: int | None, size: tuple[int, int] | None,
    any_size: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[tuple[str, str]], torch.Tensor | None]:
    """Decode every file of the split; return (images, labels, ids, skipped, sizes).

    ``any_size`` (without ``size``) keeps every image at its own size on a zero canvas of
    the largest height and width; ``sizes`` then holds each image's (H, W), else None.
    """
    if not layout.files:
        raise DataError(
            f"{root}: no images for split {split!r} (too few files per class to hold out a "
            f"{HOLDOUT_FRACTION:.0%} test split)"
        )
    paths = [str(root / rel) for rel, _ in layout.files]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
            results = [r for chunk in pool.map(_decode_chunk, chunks) for r in chunk]

    skipped: list[tuple[str, str]] = []
    ok: list[int] = []
    for i, r in enumerate(results):
        if isinstance(r, str):
            skipped.append((layout.files[i][0], r))
        else:
            ok.append(i)
    _warn_skipped(root, skipped, stacklevel=4)
    if not ok:
        raise DataError(f"{root}: none of the {len(paths)} image files for split {split!r} could be read")

    labels_all = [label for _, label in layout.files]
    had = {labels_all[i] for i in range(len(paths))}
    kept = {labels_all[i] for i in ok}
    missing = sorted(had - kept)
    if missing:
        raise DataError(f"{layout.class_dirs[missing[0]]}: no readable images (every file was skipped)")

    arrays = {i: results[i] for i in ok}
    first = ok[0]
    h0, w0 = arrays[first][0].shape[:2]  # type: ignore[index]
    ragged = any_size and size is None and len({arrays[i][0].shape[:2] for i in ok}) > 1  # type: ignore[index]
    if size is None and not ragged:
        for i in ok:
            h, w = arrays[i][0].shape[:2]  # type: ignore[index]
            if (h, w) != (h0, w0):
                raise DataError(
                    f"{paths[i]}: image is {h}×{w} pixels (H×W) but {paths[first]} is {h0}×{w0}; "
                    f"all images must have the same size (pass --image-size {h0}x{w0} to resize them)"
                )
    target_c = channels or (3 if any(arrays[i][1] for i in ok) else 1)  # type: ignore[index]
    out_h, out_w = size or (h0, w0)
    if ragged:
        out_h = max(arrays[i][0].shape[0] for i in ok)  # type: ignore[index]
        out_w = max(arrays[i][0].shape[1] for i in ok)  # type: ignore[index]
    stretched = [] if ragged else sorted({(h, w) for h, w in (arrays[i][0].shape[:2] for i in ok)  # type: ignore[index]
                        if abs(h / w - out_h / out_w) > 0.01 * out_h / out_w})
    if stretched:  # said once per load, not once per image
        h, w = stretched[0]
        more = f" (and {len(stretched) - 1} other size(s))" if len(stretched) > 1 else ""
        warnings.warn(f"{root}: resizing {h}×{w} images{more} to {out_h}×{out_w} (H×W) changes their aspect ratio",
                      DataWarning, stacklevel=4)

    groups: dict[tuple[int, int, bool], list[int]] = {}
    for pos, i in enumerate(ok):
        arr, colour = arrays[i]  # type: ignore[misc]
        groups.setdefault((arr.shape[0], arr.shape[1], colour), []).append(pos)

    out: torch.Tensor | None = None
    for (_, _, colour), positions in groups.items():
        stacked = torch.from_numpy(np.stack([arrays[ok[p]][0] for p in positions]))  # type: ignore[index]
        t = stacked.permute(0, 3, 1, 2) if colour else stacked.unsqueeze(1)
        t = resize_images(to_channels(t.contiguous(), target_c), size)
        if len(groups) == 1 and not ragged:
            out = t.contiguous()
            break
        if out is None:
            out = (torch.zeros if ragged else torch.empty)((len(ok), target_c, out_h, out_w), dtype=torch.uint8)
        if ragged:
            out[torch.tensor(positions, dtype=torch.int64), :, : t.shape[2], : t.shape[3]] = t
        else:
            out.index_copy_(0, torch.tensor(positions, dtype=torch.int64), t)
    assert out is not None
    labels = torch.tensor([labels_all[i] for i in ok], dtype=torch.int64)
    ids = [layout.files[i][0] for i in ok]
    sizes = torch.tensor([arrays[i][0].shape[:2] for i in ok], dtype=torch.int64) if ragged else None  # type: ignore[index]
    return out, labels, ids, skipped, sizes


def _header(path: str) -> tuple[int, int, bool] | str:
    """(H, W, colour) from a file's header, or why it is unusable. Colour follows
    convae.core.decode (palette images are looked at: a gray palette is gray)."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode in ("P", "PA"):
                colour = _decode_chunk([path])[0]
                return (image.height, image.width, colour[1]) if not isinstance(colour, str) else colour
            return (image.height, image.width, mode in COLOUR_MODES_AS_IS or mode not in _GRAY_HEADER_MODES)
    except Exception:
        reason = _try_decode(path)
        return reason if isinstance(reason, str) else "unreadable header"


def _decoded_bytes(root: Path, layout: _Layout, channels: int | None, size: tuple[int, int] | None) -> int:
    """About how many bytes the split takes decoded: from the first file's header (all images
    share one size, or are resized to ``size``), at 3 channels unless ``channels`` says."""
    if not layout.files:
        return 0
    if size is None:
        for rel, _ in layout.files[:8]:
            first = _header(str(root / rel))
            if not isinstance(first, str):
                size = first[:2]
                break
        else:
            return 0
    return len(layout.files) * (channels or 3) * size[0] * size[1]


def _decode_to_mapped(root: Path, layout: _Layout, split: str, channels: int | None, size: tuple[int, int] | None,
                      any_size: bool, path: Path, needed: int) -> ImageSet:
    """Decode the split chunk by chunk straight into a memory-mapped file (memory stays bounded)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    paths = [str(root / rel) for rel, _ in layout.files]
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        headers = list(pool.map(_header, paths, chunksize=_CHUNK))
    skipped = [(layout.files[i][0], h) for i, h in enumerate(headers) if isinstance(h, str)]
    ok = [i for i, h in enumerate(headers) if not isinstance(h, str)]
    if not ok:
        raise DataError(f"{root}: none of the {len(paths)} image files for split {split!r} could be read")
    shapes = {headers[i][:2] for i in ok}  # type: ignore[index]
    ragged = any_size and size is None and len(shapes) > 1
    if size is None and not ragged and len(shapes) > 1:
        h0, w0 = headers[ok[0]][:2]  # type: ignore[index]
        other = next(i for i in ok if headers[i][:2] != (h0, w0))  # type: ignore[index]
        h, w = headers[other][:2]  # type: ignore[index]
        raise DataError(f"{paths[other]}: image is {h}×{w} pixels (H×W) but {paths[ok[0]]} is {h0}×{w0}; all "
                        f"images must have the same size (pass --image-size {h0}x{w0} to resize them)")
    target_c = channels or (3 if any(headers[i][2] for i in ok) else 1)  # type: ignore[index]
    height, width = size or (max(s[0] for s in shapes), max(s[1] for s in shapes))
    warnings.warn(f"{root}: {len(ok):,} images take {gib(needed)} decoded, more than the memory budget "
                  f"({gib(memmap_cache.memory_budget())}, $CONVAE_MEMORY_BUDGET); decoding them once into "
                  f"the memory-mapped cache {path}", DataWarning, stacklevel=4)
    meta: dict = {"source": os.path.abspath(root), "split": split, "classes": layout.classes,
                  "ids": [layout.files[i][0] for i in ok], "labels": [layout.files[i][1] for i in ok],
                  "sizes": [list(headers[i][:2]) for i in ok] if ragged else None}  # type: ignore[index]

    def fill(array: np.ndarray) -> list[int]:
        failed: list[int] = []
        chunks = [ok[i:i + _CHUNK] for i in range(0, len(ok), _CHUNK)]
        bar = Progress(TextColumn("decoding {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        with bar, ThreadPoolExecutor(max_workers=_workers()) as pool:
            job = bar.add_task(root.name, total=len(ok))
            row = 0
            for chunk, decoded in zip(chunks, pool.map(_decode_chunk, ([paths[i] for i in c] for c in chunks))):
                for i, result in zip(chunk, decoded):
                    if isinstance(result, str):
                        skipped.append((layout.files[i][0], result))
                        failed.append(row)
                    else:
                        pixels, colour = result
                        t = torch.from_numpy(np.require(pixels, requirements=["C", "W"]))
                        t = (t.permute(2, 0, 1) if colour else t.unsqueeze(0)).unsqueeze(0)
                        t = resize_images(to_channels(t.contiguous(), target_c), size)[0]
                        if size is None and not ragged and tuple(t.shape[1:]) != (height, width):
                            raise DataError(f"{paths[i]}: image is {t.shape[1]}×{t.shape[2]} pixels (H×W) but the "
                                            f"others are {height}×{width}; pass --image-size to resize them")
                        array[row, :, : t.shape[1], : t.shape[2]] = t.numpy()
                    row += 1
                bar.advance(job, len(chunk))
        gone = set(failed)
        for key in ("ids", "labels", "sizes"):
            if meta[key] is not None:
                meta[key] = [v for j, v in enumerate(meta[key]) if j not in gone]
        meta["skipped"] = skipped
        return failed

    images, meta = memmap_cache.write_mapped(path, (len(ok), target_c, height, width), fill, meta)
    _warn_skipped(root, skipped, stacklevel=4)
    return _mapped_set(images, meta, split, f"folder:{root}", path)


def _check_disk_room(root: Path, folder: Path, needed: int, count: int, channels: int | None,
                     size: tuple[int, int] | None) -> None:
    """One line before decoding when neither memory nor the cache's disk can hold the decoded images."""
    import shutil

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


def load_folder(
    path: str | os.PathLike[str],
    split: str = "train",
    channels: int | None = None,
    image_size: Sequence[int] | int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    any_size: bool = False,
) -> ImageSet:
    """Load one split of an image folder (layouts in the module docstring).

    ``channels``: 1 or 3 (default: 3 if any image is colour, else 1). ``image_size``:
    (H, W) to resize every image to; without it all images must have the same size, or,
    with ``any_size`` (patch training), each keeps its own (``ImageSet.sizes``).
    The result is cached in ``<cache>/folders/``; ``cache_dir`` overrides the cache root.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected a folder of images)")
    channels = check_channels(channels)
    size = check_image_size(image_size)
    layout = _discover(root, split)
    name = f"folder:{root}"

    key = folder_cache.cache_key(
        path=os.path.abspath(root),
        split=split,
        channels=channels,
        image_size=size,
        kind=layout.kind,
        classes=layout.classes,
        holdout=HOLDOUT_FRACTION,
        max_pixels=MAX_PIXELS,
        files=folder_cache.fingerprint(layout.fingerprint_files),
        **({"any_size": True} if any_size else {}),
    )
    cpath = folder_cache.cache_path(cache_root(cache_dir), key)
    mapped = cpath.with_suffix(".u8")
    opened = memmap_cache.open_mapped(mapped)
    if opened is not None:
        _warn_skipped(root, opened[1].get("skipped", []), stacklevel=3)
        return _mapped_set(*opened, split, name, mapped)
    needed = _decoded_bytes(root, layout, channels, size)
    if needed > memmap_cache.memory_budget():
        _check_disk_room(root, mapped.parent, needed, len(layout.files), channels, size)
        with memmap_cache.exclusive(mapped.with_name(mapped.name + ".lock")):
            opened = memmap_cache.open_mapped(mapped)  # another rank may have made it while this one waited
            if opened is not None:
                return _mapped_set(*opened, split, name, mapped)
            return _decode_to_mapped(root, layout, split, channels, size, any_size, mapped, needed)
    hit = folder_cache.load(cpath)
    if hit is not None:
        images, labels, meta = hit
        _warn_skipped(root, meta.get("skipped", []), stacklevel=3)
        sizes = torch.tensor(meta["sizes"], dtype=torch.int64) if meta.get("sizes") else None
        return ImageSet(images, labels, meta["classes"], split, name, ids=meta["ids"], sizes=sizes)

    images, labels, ids, skipped, sizes = _decode_all(root, layout, split, channels, size, any_size)
    folder_cache.save(
        cpath,
        images,
        labels,
        {"source": os.path.abspath(root), "split": split, "classes": layout.classes, "ids": ids,
         "skipped": skipped, "sizes": sizes.tolist() if sizes is not None else None},
    )
    return ImageSet(images, labels, layout.classes, split, name, ids=ids, sizes=sizes)
