"""Where a folder's images are, before any decoding: its layout, classes and splits.

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
Symlink loops end at the first folder seen twice.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from convae.core.decode import IMAGE_EXTENSIONS, DataWarning
from convae.core.errors import DataError

SPLIT_FOLDERS = ("train", "test", "val", "valid", "validation")
HOLDOUT_FRACTION = 0.1


@dataclass
class Layout:
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


def discover(root: Path, split: str) -> Layout:
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
        layout = Layout(kind="classes", classes=subdirs)
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
    layout = Layout(kind="flat", classes=[root.resolve().name or "images"], class_dirs=[root])
    layout.fingerprint_files = files
    layout.files = [(rel, 0) for rel, _, _ in _holdout(files, split)]
    return layout


def _discover_split(root: Path, split: str, split_dirs: list[str]) -> Layout:
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
        layout = Layout(kind="split", classes=[root.resolve().name or "images"], class_dirs=[sdir])
        layout.fingerprint_files = files
        layout.files = [(rel, 0) for rel, _, _ in files]
        return layout
    layout = Layout(kind="split", classes=classes)
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
