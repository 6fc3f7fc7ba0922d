"""Atomic file writes: a killed process leaves either the old file or the new one, never half.

Every file convae writes (run files, reports, figures, outputs of the file verbs) goes
through :func:`atomic_write`: a temporary file in the same directory, fsynced, then
renamed over the target. A full disk becomes one line naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from convae.core.errors import RunError
from convae.core.faults import fault_point

#: errno values that mean "the disk (or quota) is full": reported in one line, old file kept.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None], *, sync: bool = True) -> None:
    """Call ``write(tmp_path)`` then rename tmp over ``path`` (fsynced first, unless ``sync`` is False).

    A full disk raises a one-line RunError and leaves the previous ``path`` untouched.
    ``sync=False`` keeps the all-or-nothing rename but skips the two fsyncs: for outputs that
    can be made again (pictures, restored images), where 10,000 of them cost seconds of fsync.
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
        if sync:
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
        if isinstance(full, OSError) and full.errno == errno.EFBIG:
            raise RunError(f"{path}: the file-size limit was reached while writing it (ulimit -f, or the "
                           "filesystem's largest file); the previous version was kept") from None
        raise
    if not sync:
        return
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    # surrogateescape: a non-UTF-8 file name (a CSV row naming it) is written back as its own bytes
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", errors="surrogateescape"))


def atomic_write_bytes(path: Path, data: bytes, *, sync: bool = True) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data), sync=sync)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunError(f"{path}: not valid JSON ({error})") from None


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


