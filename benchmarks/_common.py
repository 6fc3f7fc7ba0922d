"""Shared helpers for the benchmark scripts: where the real data is, and result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

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


def inspect_run_arguments(parser: argparse.ArgumentParser) -> None:
    """RUN_DIR, --last, --data-dir and --dataset: how the inspection diagnostics name a trained run."""
    parser.add_argument("run_dir")
    parser.add_argument("--last", action="store_true", help="measure state.pt's last weights, not model.safetensors")
    parser.add_argument("--data-dir", default=None, help="where the run's data is now")
    parser.add_argument("--dataset", default=None, help="the run's dataset where it is now, e.g. mvtec:PATH")


def fail(error: Exception) -> NoReturn:
    """One error line and exit 2, as convae's own commands end on bad input."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def open_inspect_run(args: argparse.Namespace) -> tuple[Any, torch.nn.Module]:
    """The inspect run ``args`` name (see inspect_run_arguments) and its model on the CPU in eval mode:
    model.safetensors, or state.pt's last weights with --last (where the run ended on a kept epoch)."""
    from convae.core.errors import ConvaeError
    from convae.run import Run
    from convae.run.files import STATE, load_state

    try:
        run = Run.open(args.run_dir, data_dir=args.data_dir, dataset=args.dataset)
        if run.config.task != "inspect":
            raise ConvaeError(f"{args.run_dir}: a --task {run.config.task} run, not an inspect run")
        model = run.model("cpu")
        if args.last:
            model.load_state_dict(load_state(run.path / STATE)["model"])
    except ConvaeError as error:
        fail(error)
    return run, model
