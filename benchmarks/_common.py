"""Shared helpers for the benchmark scripts: where the real data is, and result files."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def data_root() -> Path:
    """$CONVAE_DATA, else ../shared/data beside the repo; exit with a reason when neither exists."""
    from convae.data.paths import real_data_root  # noqa: PLC0415

    root = real_data_root(REPO)
    if root is None:
        sys.exit(f"no real data: set CONVAE_DATA to a folder holding MNIST/ (or provide {REPO.parent / 'shared' / 'data'})")
    return root


def commit() -> str:
    from convae.bench.provenance import commit as source_commit  # noqa: PLC0415

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
