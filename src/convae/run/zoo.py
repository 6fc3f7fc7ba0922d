"""Bundled pretrained models, ``zoo:NAME``: run directories that ship inside the package.

A user with a noisy photo should not have to train anything. Each bundled model is a
folder ``convae/zoo/NAME/`` holding an ordinary run's ``config.json`` and
``model.safetensors`` plus ``card.json`` (what it is for, its training data, its measured
figures and the SHA-256 of its weights file). Nothing is downloaded, so it works offline
and on a fresh install.

The package's files are never written: opening ``zoo:NAME`` checks the weights file
against its card, then copies the run into the user's cache
(``CACHE/zoo/NAME-DIGEST/``) and opens that copy, so the verbs that keep artifacts in a
run directory (evaluations, figures, thresholds) write there, not into site-packages. A
weights file that does not match its card, in the package or in the cache, is refused
in one line and never loaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from convae.core.atomic import read_json
from convae.core.errors import RunError
from convae.data.paths import cache_root
from convae.run.files import CONFIG, WEIGHTS

PREFIX = "zoo:"
CARD = "card.json"
#: Where the bundled models are; ``$CONVAE_ZOO`` points elsewhere (tests, a model being made).
PACKAGE_ZOO = Path(__file__).resolve().parents[1] / "zoo"


def zoo_root() -> Path:
    override = os.environ.get("CONVAE_ZOO")
    return Path(override).expanduser() if override else PACKAGE_ZOO


def is_zoo(spec: str | os.PathLike[str]) -> bool:
    return str(spec).startswith(PREFIX)


def zoo_names() -> list[str]:
    root = zoo_root()
    return sorted(p.name for p in root.iterdir() if (p / CARD).is_file()) if root.is_dir() else []


def zoo_card(name: str) -> dict[str, Any]:
    """The card of bundled model ``name``; an unknown name lists the known ones."""
    folder = zoo_root() / name
    if not (folder / CARD).is_file():
        known = ", ".join(f"zoo:{n}" for n in zoo_names()) or "none"
        raise RunError(f"zoo:{name}: no such bundled model; bundled: {known} (see `convae zoo`)")
    card = read_json(folder / CARD)
    if not isinstance(card, dict) or not isinstance(card.get("sha256"), str):
        raise RunError(f"{folder / CARD}: not a zoo card (no sha256 of the weights); reinstall convae")
    return card


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_weights(path: Path, expected: str, spec: str) -> None:
    if not path.is_file():
        raise RunError(f"{spec}: {path} is missing; reinstall convae")
    found = file_sha256(path)
    if found != expected:
        raise RunError(f"{spec}: {path} does not match its card (sha256 {found[:12]}…, expected {expected[:12]}…); "
                       "it was changed or damaged, so it is not loaded; reinstall convae")


def zoo_run_dir(spec: str) -> Path:
    """The checked, writable copy of bundled model ``spec`` (``zoo:NAME``) in the cache."""
    name = spec[len(PREFIX):]
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise RunError(f"{spec!r}: give a bundled model as zoo:NAME (see `convae zoo`)")
    card = zoo_card(name)
    source = zoo_root() / name
    copy = cache_root() / "zoo" / f"{name}-{card['sha256'][:12]}"
    if (copy / WEIGHTS).is_file():
        _check_weights(copy / WEIGHTS, card["sha256"], spec)
        return copy
    _check_weights(source / WEIGHTS, card["sha256"], spec)
    staging = copy.with_name(copy.name + f".partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for item in (CONFIG, WEIGHTS, CARD):
        shutil.copyfile(source / item, staging / item)
    _check_weights(staging / WEIGHTS, card["sha256"], spec)  # the copy, as written
    try:
        staging.rename(copy)
    except OSError:  # another process made it first: keep theirs, checked
        shutil.rmtree(staging, ignore_errors=True)
        _check_weights(copy / WEIGHTS, card["sha256"], spec)
    return copy
