"""The files of a run directory: names, weights, training state, metrics and the lock.

Layout (see DESIGN.md): ``config.json``, ``model.safetensors``, ``state.pt``,
``metrics.jsonl``, ``figures/``, ``report.html``. Every write goes to a temporary file
in the same directory and is renamed over the target, so a killed process leaves either
the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from convae.core.atomic import atomic_write, atomic_write_bytes, atomic_write_text, first_line, read_json
from convae.core.errors import RunError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
#: An inspect run's best epoch by its held-out check (convae.training.keep_best).
BEST = "best.safetensors"
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"  # the spreadsheet copy of METRICS, rewritten after each epoch
LOCK = ".lock"
FIGURES = "figures"
REPORT = "report.html"
#: safetensors metadata key holding the SHA-256 of the tensors, so a flipped bit is caught.
CHECKSUM = "convae_sha256"


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order.

    Stored in the safetensors metadata and checked on load, so a bit flipped anywhere in
    the data is reported instead of silently loaded (safetensors itself checks only sizes).
    """
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Weights as safetensors (loading them can never run code), with their checksum."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    metadata = {**(metadata or {}), CHECKSUM: tensors_checksum(tensors)}
    # Serialised in memory and written with plain file I/O, so a full disk surfaces as the
    # OSError atomic_write reports, not as a library's own error type.
    data = save(tensors, metadata=metadata)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def weights_metadata(path: Path) -> dict[str, str]:
    """A safetensors file's metadata (its checksum, what wrote it), or one line naming the file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise RunError(f"{path}: not a readable safetensors file ({first_line(error)})") from None


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: no weights here (train first, or check the run directory)")
    expected = weights_metadata(path).get(CHECKSUM)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise RunError(f"{path}: not a readable safetensors file ({first_line(error)})") from None
    if expected is not None and tensors_checksum(tensors) != expected:
        raise RunError(f"{path}: corrupted (checksum mismatch); restore it or retrain")
    return tensors


def check_state_dict(path: Path, model: torch.nn.Module, loaded: dict[str, torch.Tensor]) -> None:
    """Refuse weights that do not fit the model, before any of them are copied in."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(loaded))
    extra = sorted(set(loaded) - set(expected))
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise RunError(f"{path}: weights do not match the model in config.json ({detail})")
    for key, tensor in expected.items():
        got = loaded[key]
        if got.shape != tensor.shape or got.dtype != tensor.dtype:
            raise RunError(
                f"{path}: tensor {key!r} is {tuple(got.shape)} {got.dtype}, "
                f"the model needs {tuple(tensor.shape)} {tensor.dtype}"
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise RunError(f"{path}: tensor {key!r} holds NaN or Inf values")


def load_state(path: Path) -> dict[str, Any]:
    """Training state, loaded as data only (``weights_only=True``) and checked against its checksum."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path}: no training state to resume from") from None
    except Exception as error:
        raise RunError(f"{path}: refused to load training state ({first_line(error)})") from None
    if isinstance(state, dict) and CHECKSUM in state:
        expected = state.pop(CHECKSUM)
        if _state_checksum(state) != expected:
            raise RunError(f"{path}: corrupted (checksum mismatch); delete it to restart from the last epoch's weights")
    return state


def _state_checksum(state: Any) -> str:
    """SHA-256 over a state's structure and values: torch's zip reader checks no CRCs."""
    digest = hashlib.sha256()

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(f"D{len(value)}".encode())
            for key in sorted(value, key=repr):
                walk(key)
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"S{len(value)}".encode())  # list or tuple: pickling may swap them
            for item in value:
                walk(item)
        else:
            digest.update(f"{type(value).__name__}:{value!r};".encode())

    walk(state)
    return digest.hexdigest()


def save_state(path: Path, state: dict[str, Any]) -> None:
    """torch.save format (read back with weights_only=True), carrying its own checksum."""
    state = {**state, CHECKSUM: _state_checksum(state)}
    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory: torch's own writer hides ENOSPC in a RuntimeError
    atomic_write_bytes(path, buffer.getvalue())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RunError(f"{path}:{number}: not UTF-8 text; `convae train --out {path.parent} --resume` "
                           "rewrites the log from the checkpoint") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise RunError(f"{path}:{number}: not a JSON line") from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise RunError(f"{path}:{number}: not a metrics row (a JSON object with an epoch)")
        rows.append(row)
    return rows


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the whole (small) file atomically rather than appending in place."""
    atomic_write_text(Path(run_dir) / METRICS, "".join(json.dumps(row) + "\n" for row in rows))


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock so two trainers never write one run directory."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir}: exists and is not a folder; a run directory is a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / LOCK, "a+")
    except OSError as error:  # read-only filesystem, /proc, no permission, ...
        raise RunError(f"--out {run_dir}: cannot make a run directory there ({error.strerror or error})") from None
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{run_dir}: another convae process is writing this run directory") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def remove_stale_temps(run_dir: Path) -> list[Path]:
    """Delete the temporary files a killed trainer left behind; call only under run_lock.

    Only the temporaries of the files training writes, so a concurrent ``convae report``
    writing its own files is never disturbed.
    """
    removed = []
    for name in (CONFIG, WEIGHTS, STATE, METRICS, METRICS_CSV, BEST):
        for tmp in Path(run_dir).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def require_run(run_dir: Path) -> Path:
    """A run directory that has a config and weights, or a clear error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    if not (run_dir / CONFIG).exists():
        raise RunError(f"{run_dir}: not a run directory (no {CONFIG})")
    if not (run_dir / WEIGHTS).exists():
        raise RunError(f"{run_dir}: no {WEIGHTS} in this run directory (did training finish an epoch?)")
    return run_dir


def read_config(run_dir: Path) -> dict[str, Any]:
    config = read_json(Path(run_dir) / CONFIG)
    if not isinstance(config, dict) or "model" not in config:
        raise RunError(f"{Path(run_dir) / CONFIG}: missing the 'model' section")
    return config
