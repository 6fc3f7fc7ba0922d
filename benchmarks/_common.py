"""Shared helpers for the benchmark scripts: where the real data is, and result files."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def real_data_root(need: str | None = "MNIST") -> Path | None:
    """Where the real datasets are for this checkout: ``$CONVAE_DATA``, else ``shared/data``
    beside the checkout (how this project's test and benchmark machines keep them); the first
    that holds ``need`` (any folder when None), or None.

    This is the tests' and benchmarks' business: the library itself finds data only through
    --data-dir, $CONVAE_DATA and its cache. The project never copies the data into the repository.
    """
    candidates = [Path(os.environ["CONVAE_DATA"]).expanduser()] if os.environ.get("CONVAE_DATA") else []
    candidates.append(REPO.parent / "shared" / "data")
    for candidate in candidates:
        if (candidate / need).is_dir() if need else candidate.is_dir():
            return candidate
    return None


def data_root() -> Path:
    """$CONVAE_DATA, else ../shared/data beside the repo; exit with a reason when neither exists."""
    root = real_data_root()
    if root is None:
        sys.exit(f"no real data: set CONVAE_DATA to a folder holding MNIST/ (or provide {REPO.parent / 'shared' / 'data'})")
    return root


def commit() -> str:
    from convae.bench.provenance import commit as source_commit

    return source_commit(REPO)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_end": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def quiet_on_closed_pipe(main: Callable[[], None]) -> None:
    """Run a script's ``main``; piped into ``head``, the reader has what it wanted, so no traceback."""
    try:
        main()
    except BrokenPipeError:
        sys.stderr.close()
