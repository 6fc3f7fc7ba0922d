"""Cache of decoded image folders as safetensors files (no pickle, atomic writes).

Decoding tens of thousands of PNGs takes seconds to minutes; reading one uint8 tensor back
takes a fraction of a second. The cache key covers everything the result depends on (the
folder, split, channels, size, class list and every file's path, size and mtime), so an
edited folder simply misses the cache instead of returning stale pixels.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch

from convae.core.atomic import atomic_write
from convae.core.decode import DataWarning

#: Bump when the decoding rules change, so old cache files are no longer used.
CACHE_VERSION = 1
_META_KEY = "convae"


def fingerprint(files: Iterable[tuple[str, int, int]]) -> str:
    """sha1 over (relative path, size, mtime_ns) of every file, in the given order."""
    h = hashlib.sha1()
    for rel, size, mtime_ns in files:
        h.update(f"{rel}\0{size}\0{mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def cache_key(**parts: Any) -> str:
    """sha1 of the JSON of everything the decoded result depends on."""
    blob = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode("utf-8", "surrogateescape")).hexdigest()


def cache_path(cache_root: Path, key: str) -> Path:
    return cache_root / "folders" / f"{key}.safetensors"


def load(path: Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]] | None:
    """Return (images, labels, metadata) from a cache file, or None if absent or unusable."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[_META_KEY])
            images = f.get_tensor("images")
            labels = f.get_tensor("labels")
        if meta.get("version") != CACHE_VERSION or len(images) != len(labels):
            return None
        if images.dtype != torch.uint8 or labels.dtype != torch.int64 or images.dim() != 4:
            return None
        return images, labels, meta
    except Exception as e:
        warnings.warn(f"{path}: ignoring unreadable cache file ({e})", DataWarning, stacklevel=3)
        return None


def save(path: Path, images: torch.Tensor, labels: torch.Tensor, meta: dict[str, Any]) -> bool:
    """Write the cache file atomically (convae.core.atomic); warn and go on on failure."""
    from safetensors.torch import save_file

    try:
        atomic_write(path, lambda tmp: save_file(
            {"images": images.contiguous(), "labels": labels.contiguous()},
            str(tmp),
            metadata={_META_KEY: json.dumps({"version": CACHE_VERSION, **meta})},
        ))
        return True
    except Exception as e:
        cause = e if isinstance(e, OSError) else e.__cause__ or e
        reason = getattr(cause, "strerror", None) or str(e) or type(e).__name__
        warnings.warn(
            f"{path.parent}: cannot write the decoded-folder cache ({reason}); "
            "the folder will be decoded again next time",
            DataWarning,
            stacklevel=3,
        )
        return False
