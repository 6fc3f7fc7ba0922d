"""What an output option may write over: only what convae wrote there for the same option.

A careless ``--out`` or ``--csv`` must never destroy a file convae did not make: another run's
weights, its config.json, the user's own photo. So before any work, every verb checks where
it will write:

- a file of a run directory (config, weights, state, metrics, logs, threshold, evaluations,
  the report) is refused, whatever its content;
- an existing file is overwritten only when its content shows it is a previous output of the
  same kind (a code file's magic, a CSV's header, an ONNX graph's convae metadata, the PNG
  text chunk convae writes into every picture); anything else is refused;
- a folder output must be a folder (or not exist yet) that can be written, so a read-only or
  impossible target is one line about the target, not one per input file.

Recognition is by content, never by name. Each refusal is one line naming the option and the path.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from convae.core.errors import ConvaeError

#: What a run directory holds; an output option never writes any of these in a run directory.
RUN_FILE_NAMES = frozenset({
    "config.json", "model.safetensors", "state.pt", "metrics.jsonl", "metrics.csv", "threshold.json",
    "report.html", ".lock", "time-limit.json",
})
#: Prefixes of the evaluations and indexes a run directory keeps (eval-test.json, detect-eval.json, ...).
RUN_FILE_PREFIXES = ("eval-", "detect-eval", "rate-", "code-index")
#: The PNG text chunk every picture convae writes carries (key, value).
PNG_MARK = ("Software", "convae")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_run_dir(folder: Path) -> bool:
    """A folder holding a run: a config.json beside weights or a training state."""
    return (folder / "config.json").is_file() and ((folder / "model.safetensors").exists()
                                                    or (folder / "state.pt").exists())


def _is_run_file(path: Path) -> bool:
    name = path.name
    return is_run_dir(path.parent) and (name in RUN_FILE_NAMES or name.startswith(RUN_FILE_PREFIXES))


def _head(path: Path, size: int = 4096) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def _npz_holding(path: Path, *names: str) -> bool:
    """An .npz archive with these arrays (how convae's code and embedding files are told apart)."""
    if not _head(path, 2).startswith(b"PK"):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return {f"{name}.npy" for name in names} <= set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _codes(path: Path) -> bool:
    return _head(path, 3).startswith(b"\x89CV") or _npz_holding(path, "format", "weights_hash")


def _embedding(path: Path) -> bool:
    return _head(path, 3).startswith(b"id,") or _npz_holding(path, "codes", "ids")


def _png(path: Path) -> bool:
    head = _head(path, 1 << 16)
    key, value = PNG_MARK
    return head.startswith(PNG_SIGNATURE) and f"{key}\x00{value}".encode() in head


def _onnx(path: Path) -> bool:
    """convae's graphs carry ``convae.format`` in their metadata_props, which protobuf writes last."""
    return _tail_has(path, b"convae.format")


def _tail_has(path: Path, marker: bytes, size: int = 1 << 16) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - size))
            return marker in handle.read()
    except OSError:
        return False


#: How each kind of output is recognised by its content.
KINDS: dict[str, Callable[[Path], bool]] = {
    "codes": _codes,
    "detect-csv": lambda p: _head(p, 40).startswith(b"path,score,score_kind,threshold,verdict"),
    "embedding": _embedding,
    "png": _png,
    "onnx": _onnx,
    "compare-html": lambda p: b"<title>convae compare" in _head(p),
    "speed-json": lambda p: b'"benchmark": "speed"' in _head(p),
    "speed-md": lambda p: _head(p, 40).startswith(b"Training speed on"),
}


def check_output_file(path: Path, option: str, kind: str) -> None:
    """Refuse, in one line, to write ``path`` unless it is new or a previous output of ``kind``."""
    path = Path(path)
    if path.is_dir():
        raise ConvaeError(f"{option} {path}: is a folder; give a file name")
    if _is_run_file(path):
        raise ConvaeError(f"{option} {path}: is a file of the run directory {path.parent}; "
                          "convae never writes an output over a run's own files, pick another path")
    if path.exists() or path.is_symlink():
        if not KINDS[kind](path):
            raise ConvaeError(f"{option} {path}: exists and is not a previous convae {kind} output; "
                              "convae will not overwrite it, pick another path or remove it yourself")
    _check_writable(path.parent, option, path)


def check_output_folder(path: Path, option: str) -> None:
    """A folder output: a folder (or a path to make one) that can be written, and not a run directory.

    Tried for real, with a temporary file in the nearest folder that exists: a read-only
    filesystem refuses even root. Nothing is made here, so a refused verb leaves nothing behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConvaeError(f"{option} {path}: exists and is not a folder")
    if path.is_dir() and is_run_dir(path):
        raise ConvaeError(f"{option} {path}: is a run directory; write outputs into another folder")
    _check_writable(path, option, path)


def check_output_picture(path: Path) -> None:
    """One picture inside a folder output: new, or a PNG convae wrote (for one input's result)."""
    if (path.exists() or path.is_symlink()) and not _png(path):
        raise ConvaeError(f"{path} exists and is not a picture convae wrote; it was left as it is")


def _check_writable(target: Path, option: str, named: Path) -> None:
    """The nearest existing folder at or above ``target`` must be a folder convae can write in."""
    existing = target
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConvaeError(f"{option} {named}: {existing} is a file, not a folder")
    try:  # tried for real: a read-only filesystem refuses even root, where os.access says yes
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConvaeError(f"{option} {named}: cannot write in {existing} ({error.strerror or error}); "
                          "nothing was written") from None
