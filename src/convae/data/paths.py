"""Where convae keeps its cache and looks for data (one place, so every module agrees)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The writable cache: ``cache_dir``, else ``$CONVAE_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/convae``.

    Downloads and decoded image folders go here, never into a data folder.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("CONVAE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "convae"


def data_roots(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for datasets, in order: ``data_dir``, ``$CONVAE_DATA``, the cache."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get("CONVAE_DATA")
    if env:
        roots.append(Path(env).expanduser())
    roots.append(cache_root())
    seen: set[str] = set()
    unique = []
    for r in roots:
        key = os.path.abspath(r)
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique

