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


def real_data_root(repo: str | os.PathLike[str], need: str | None = "MNIST") -> Path | None:
    """Where the real benchmark datasets are for a checkout at ``repo``: ``$CONVAE_DATA``, else
    ``shared/data`` beside the checkout (how this project's test and benchmark machines keep
    them); the first that holds ``need`` (any folder when None), or None.

    Tests skip and benchmarks stop with a reason when it is None; the project never copies
    the data into the repository.
    """
    candidates = [Path(os.environ["CONVAE_DATA"]).expanduser()] if os.environ.get("CONVAE_DATA") else []
    candidates.append(Path(repo).resolve().parent / "shared" / "data")
    for candidate in candidates:
        if (candidate / need).is_dir() if need else candidate.is_dir():
            return candidate
    return None
