"""The user's own image files: find them in folders, read them, fit them to a model's input.

Every verb that takes ``IMAGE|FOLDER`` arguments (detect, denoise, colorize, encode, predict)
goes through here, so they all accept the same files, skip the same ones, and word their
errors the same way: one line that names the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convae.core.decode import IMAGE_EXTENSIONS, BadImage, decode_image
from convae.core.errors import ConvaeError, DataError


@dataclass(frozen=True)
class FoundFile:
    """One input file, the folder argument it was found in (None if named directly), and why it is unusable."""

    path: Path
    folder: Path | None = None
    error: str | None = None

    def output_name(self, suffix: str = ".png") -> Path:
        """Where this file's result goes below an output folder: its path inside the folder argument."""
        relative = self.path.relative_to(self.folder) if self.folder is not None else Path(self.path.name)
        return relative.with_suffix(suffix)


def _images_below(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursively, sorted, hidden files and folders skipped).

    ``os.walk`` without following links cannot loop on a symlink cycle; unreadable
    sub-folders are simply not entered.
    """
    import os

    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / name for name in files
                  if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found)


def find_image_files(inputs: Iterable[str | Path]) -> list[FoundFile]:
    """Files as given, folders as their image files; a missing path or empty folder is an entry with an error."""
    found: list[FoundFile] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = _images_below(item)
            if not files:
                found.append(FoundFile(item, None, f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder"))
            found += [FoundFile(path, item) for path in files]
        elif item.exists():
            found.append(FoundFile(item))
        else:
            found.append(FoundFile(item, None, "no such file or folder"))
    return found


def read_image(path: str | Path, notes: list[str] | None = None) -> torch.Tensor:
    """uint8 C×H×W (C is 1 or 3) of one image file as a viewer shows it (EXIF orientation applied),
    or DataError naming the file and the reason. ``notes`` collects what the reading changed
    (an animated image's first frame); without it such a note is a DataWarning."""
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise DataError(f"{path}: a symbolic link that loops or points nowhere")
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    try:
        array, _ = decode_image(path, notes=notes)
    except BadImage as error:
        raise DataError(f"{path}: not a readable image ({error})") from None
    tensor = torch.from_numpy(np.array(array, dtype=np.uint8, copy=True))
    return (tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)).contiguous()


def conversion_note(have: Sequence[int], want: Sequence[int]) -> str:
    """What fitting a C×H×W image to another C×H×W changes, in words ('' when nothing)."""
    notes = []
    if have[0] != want[0]:
        notes.append(f"{'RGB' if have[0] == 3 else 'gray'} converted to {'gray' if want[0] == 1 else 'RGB'}")
    if tuple(have[1:]) != tuple(want[1:]):
        notes.append(f"resized {have[1]}×{have[2]} → {want[1]}×{want[2]}")
    return "; ".join(notes)


def image_for_model(path: str | Path, input_shape: Sequence[int], keep_size: bool = False) -> tuple[torch.Tensor, str]:
    """One file as uint8 C×H×W in a model's input shape, and a note of what was converted.

    Colour becomes gray with ITU-R 601 luma (or gray is replicated to RGB); other sizes are
    resized with antialiasing, unless ``keep_size`` (a model that goes over the image in
    tiles). The note lets a verb tell the user what happened to the file.
    """
    from convae.data.convert import convert_images

    notes: list[str] = []
    image = read_image(path, notes)
    channels, height, width = (int(v) for v in input_shape)
    if keep_size:
        height, width = image.shape[1], image.shape[2]
    note = "; ".join(filter(None, [*notes, conversion_note(tuple(image.shape), (channels, height, width))]))
    converted = convert_images(image.unsqueeze(0), channels, (height, width))[0]
    return converted.contiguous(), note


def read_files_for_model(inputs: Iterable[str | Path], input_shape: Sequence[int], *, keep_size: bool = False,
                         verb: str = "encode") -> tuple[list[tuple[FoundFile, torch.Tensor, str]], list[tuple[str, str]]]:
    """Every input file fitted to a model's input: (the file, its uint8 image, the conversion note),
    and (path, reason) of each file that could not be read, skipped and never fatal alone; one
    line naming the first failure when none could be read."""
    found_files, read, failed = find_image_files(inputs), [], []
    for found in found_files:
        try:
            if found.error:
                raise DataError(found.error)
            image, note = image_for_model(found.path, input_shape, keep_size=keep_size)
        except ConvaeError as error:
            failed.append((str(found.path), str(error).removeprefix(f"{found.path}: ")))
            continue
        read.append((found, image, note))
    if not read:
        first = f" (first: {failed[0][0]}: {failed[0][1]})" if failed else ""
        raise ConvaeError(f"none of the {len(found_files)} file(s) could be read as an image{first}"
                          if found_files else f"no images to {verb}")
    return read, failed
