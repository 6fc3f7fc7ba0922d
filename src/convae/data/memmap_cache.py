"""Folders larger than memory: decoded once into a memory-mapped uint8 file, then read in place.

A folder whose decoded size (N·C·H·W bytes) is above the memory budget is not decoded
into RAM. It is decoded once, a chunk at a time and with a progress bar, straight into
``<cache>/folders/<key>.u8`` (raw N×C×H×W uint8) with ``<key>.u8.json`` beside it (shape,
labels, file names). Training then reads batches from the mapped file: the operating
system pages in what a batch touches and drops it under memory pressure.

The budget is ``$CONVAE_MEMORY_BUDGET`` (bytes, or with a K/M/G suffix), else half of
the memory available now. An exclusive lock on ``<key>.u8.lock`` makes the first torchrun
rank decode while the others wait and then map the same file. A subset (validation
split, normal classes) of a mapped set is written to its own mapped file, so nothing
ever gathers the whole set in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from convae.core.atomic import atomic_write_text
from convae.core.device import free_memory
from convae.core.errors import DataError

#: Rows copied at a time when a subset is written: bounded memory whatever the set's size.
COPY_ROWS = 1024
META_SUFFIX = ".json"


def parse_bytes(text: str) -> int:
    """``2G``, ``500M``, ``64k`` or a plain byte count."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", str(text))
    if not match:
        raise DataError(f"CONVAE_MEMORY_BUDGET: {text!r} is not a size (use bytes or e.g. 500M, 2G)")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def memory_budget() -> int:
    """How many decoded bytes a dataset may hold in memory before it is memory-mapped instead."""
    given = os.environ.get("CONVAE_MEMORY_BUDGET")
    if given:
        return parse_bytes(given)
    available = free_memory("cpu")  # MemAvailable; unknown: guess 8 GiB
    return (available if available is not None else 8 * 2**30) // 2


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed): one process decodes, the rest wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + META_SUFFIX)


def open_mapped(path: Path) -> tuple[torch.Tensor, dict] | None:
    """(images mapped from ``path``, metadata) when both files are complete, else None."""
    meta_path = _meta_path(path)
    if not meta_path.is_file() or not path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        shape = tuple(int(v) for v in meta["shape"])
        if path.stat().st_size != int(np.prod(shape)):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if shape[0] == 0:
        return torch.zeros(shape, dtype=torch.uint8), meta
    # Copy-on-write mapping: the tensor is writable for torch, and nothing is ever written back.
    array = np.memmap(path, dtype=np.uint8, mode="c", shape=shape)
    return torch.from_numpy(array), meta


def write_mapped(path: Path, shape: Sequence[int], fill: Callable[[np.ndarray], list[int]], meta: dict) -> tuple[torch.Tensor, dict]:
    """Create ``path`` of ``shape`` uint8, let ``fill(array)`` write it, and publish it atomically.

    ``fill`` returns the rows it could not fill; they are dropped (later rows move up), and
    the metadata's ``shape`` says how many rows are left. The metadata file is written last:
    a file without it is unfinished and is never used.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            # Claim the disk space now: a mapped write to a full disk kills the process with SIGBUS,
            # a failed allocation is an OSError that becomes one line.
            if shape[0]:
                os.posix_fallocate(handle.fileno(), 0, int(np.prod(shape)))
        array = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=tuple(shape)) if shape[0] else None
        dropped = sorted(set(fill(array))) if array is not None else []
        rows = int(shape[0]) - len(dropped)
        if array is not None and dropped:
            gone = set(dropped)
            keep = [i for i in range(int(shape[0])) if i not in gone]
            for target, source in enumerate(keep):
                if target != source:
                    array[target] = array[source]
        if array is not None:
            array.flush()
            del array
        os.truncate(tmp, rows * int(np.prod(shape[1:])))
        os.replace(tmp, path)
        atomic_write_text(_meta_path(path), json.dumps({**meta, "shape": [rows, *map(int, shape[1:])],
                                                         "dropped": dropped}))
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DataError(f"{path.parent}: cannot write the memory-mapped cache ({error.strerror or error})") from None
    opened = open_mapped(path)
    assert opened is not None
    return opened


def mapped_subset(source: Path, images: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, Path]:
    """Rows ``index`` of a mapped set, as a mapped file of their own (made once, shared by ranks)."""
    digest = hashlib.sha1(index.to(torch.int64).numpy().tobytes()).hexdigest()[:16]
    path = source.with_name(f"{source.stem}.{digest}.u8")
    with exclusive(path.with_name(path.name + ".lock")):
        opened = open_mapped(path)
        if opened is None:
            def fill(array: np.ndarray) -> list[int]:
                for start in range(0, len(index), COPY_ROWS):
                    rows = index[start:start + COPY_ROWS]
                    array[start:start + len(rows)] = images.index_select(0, rows).numpy()
                return []

            opened = write_mapped(path, (len(index), *images.shape[1:]), fill, {"subset_of": source.name})
    return opened[0], path
