"""Run directories: the one artifact training writes and every other verb reads.

Layout (see DESIGN.md): ``config.json``, ``model.safetensors``, ``state.pt``,
``metrics.jsonl``, ``figures/``, ``report.html``. Every write goes to a temporary file
in the same directory and is renamed over the target, so a killed process leaves either
the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from convae.errors import RunError
from convae.faults import fault_point

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
METRICS = "metrics.jsonl"
LOCK = ".lock"
FIGURES = "figures"
REPORT = "report.html"
#: safetensors metadata key holding the SHA-256 of the tensors, so a flipped bit is caught.
CHECKSUM = "convae_sha256"
#: errno values that mean "the disk (or quota) is full": reported in one line, old file kept.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
T = TypeVar("T")
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename tmp over ``path`` (fsynced first).

    A full disk raises a one-line RunError and leaves the previous ``path`` untouched.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results should read like any file
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        fault_point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        full = error if isinstance(error, OSError) else error.__cause__ or error.__context__
        if isinstance(full, OSError) and full.errno in _DISK_FULL:
            raise RunError(
                f"{path}: disk full while writing it ({os.strerror(full.errno)}); the previous version was kept"
            ) from None
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    # surrogateescape: a non-UTF-8 file name (a CSV row naming it) is written back as its own bytes
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", errors="surrogateescape"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from its config.json form.

    Keys the dataclass does not know (written by another convae version) are ignored, and
    ``image_size``, a list in JSON, becomes the tuple the config holds.
    """
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k in known}
    if values.get("image_size"):
        values["image_size"] = tuple(values["image_size"])
    return cls(**values)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunError(f"{path}: not valid JSON ({error})") from None


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


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: no weights here (train first, or check the run directory)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            expected = (handle.metadata() or {}).get(CHECKSUM)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise RunError(f"{path}: not a readable safetensors file ({_first_line(error)})") from None
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
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "refused"
        raise RunError(f"{path}: refused to load training state ({_first_line(error)})") from None
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
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise RunError(f"{path}:{number}: not a JSON line") from None
    return rows


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the whole (small) file atomically rather than appending in place."""
    atomic_write_text(Path(run_dir) / METRICS, "".join(json.dumps(row) + "\n" for row in rows))


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock so two trainers never write one run directory."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK, "a+")
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
    for name in (CONFIG, WEIGHTS, STATE, METRICS):
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


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def read_config(run_dir: Path) -> dict[str, Any]:
    config = read_json(Path(run_dir) / CONFIG)
    if not isinstance(config, dict) or "model" not in config:
        raise RunError(f"{Path(run_dir) / CONFIG}: missing the 'model' section")
    return config


def build_from_config(config: dict[str, Any], source: Path | str = CONFIG) -> torch.nn.Module:
    """Rebuild the network a config.json describes (weights not loaded)."""
    from convae.models import build_model  # noqa: PLC0415 - keeps runs importable without torch models

    model = config["model"]
    try:
        return build_model(
            model["name"], tuple(model["input_shape"]), model.get("params", {}), model.get("out_channels"),
            model.get("color_output"),
        )
    except KeyError as error:
        raise RunError(f"{source}: model section lacks {error}") from None


def load_model(run_dir: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model of a run directory, in eval mode, and its config."""
    run_dir = require_run(run_dir)
    config = read_config(run_dir)
    model = build_from_config(config, run_dir / CONFIG)
    weights = load_weights(run_dir / WEIGHTS)
    check_state_dict(run_dir / WEIGHTS, model, weights)
    model.load_state_dict(weights)
    return model.to(device).eval(), config
