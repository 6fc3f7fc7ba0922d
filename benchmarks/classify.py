"""Benchmark: MNIST test accuracy and training time of the classifier presets.

    python benchmarks/classify.py [--data-dir DIR] [--threads N] [--cnn-epochs 100] [--deep-epochs 8]

Trains ``cnn`` with the reference example's settings (SGD lr 0.01 without momentum,
batch 256, 80/20 train/val split with seed 0) and ``cnn-deep`` with its preset defaults,
each on the full MNIST training split, scores both on the 10,000 test images, and writes
``benchmarks/results/classify.json``. The targets: ``cnn`` ≥ 97.5% (the reference),
``cnn-deep`` ≥ 99.3%.

Timings are wall-clock seconds on whatever machine runs this, so record the thread count
and load next to them (both are in the JSON).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from _common import commit

from convae.applications.classify import ClassifyConfig, train_classifier
from convae.core.atomic import read_json, write_json
from convae.models.classifier import get_classifier
from convae.run import read_metrics

TARGETS = {"cnn": 0.975, "cnn-deep": 0.993}


def default_data_dir() -> Path | None:
    from _common import real_data_root

    return real_data_root()


def run_one(model: str, epochs: int, data_dir: Path, threads: int, runs_dir: Path) -> dict:
    """Train one preset into a fresh run directory and collect what the benchmark reports."""
    run_dir = runs_dir / model
    config = ClassifyConfig(dataset="mnist", data_dir=str(data_dir), model=model, epochs=epochs, threads=threads,
                            seed=0, split_seed=0, val_fraction=0.2)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = train_classifier(config, run_dir, log=lambda line: print(f"[{model}] {line}", flush=True))
    wall = time.perf_counter() - started
    metrics = read_metrics(run_dir)
    resolved = config.resolved()
    return {
        "model": model,
        "epochs": epochs,
        "test_accuracy": round(result["test_accuracy"], 5),
        "target": TARGETS[model],
        "reached_target": result["test_accuracy"] >= TARGETS[model],
        "val_accuracy": round(result["val_accuracy"], 5),
        "test_loss": round(result["test_loss"], 5),
        "train_seconds": round(sum(row["seconds"] for row in metrics), 1),
        "wall_seconds": round(wall, 1),
        "load_average_at_start": round(load_before, 2),
        "parameters": sum(p.numel() for p in get_classifier(model).builder((1, 28, 28), 10).parameters()),
        "settings": {
            "optimizer": resolved.optimizer,
            "lr": resolved.lr,
            "momentum": resolved.momentum,
            "weight_decay": resolved.weight_decay,
            "batch_size": resolved.batch_size,
            "schedule": resolved.lr_schedule,
            "augment": resolved.augment,
            "val_fraction": resolved.val_fraction,
            "split_seed": resolved.split_seed,
            "seed": resolved.seed,
        },
        "val_accuracy_per_epoch": [round(row["val_accuracy"], 4) for row in metrics],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder holding MNIST/")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    parser.add_argument("--cnn-epochs", type=int, default=100)
    parser.add_argument("--deep-epochs", type=int, default=8)
    parser.add_argument("--models", default="cnn,cnn-deep", help="comma-separated presets to run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "classify.json")
    parser.add_argument("--note", default="", help="free text stored with the results (e.g. machine load)")
    args = parser.parse_args()
    if args.data_dir is None or not (args.data_dir / "MNIST").is_dir():
        sys.exit(f"error: {args.data_dir}: no MNIST/ folder here (use --data-dir or $CONVAE_DATA)")
    epochs = {"cnn": args.cnn_epochs, "cnn-deep": args.deep_epochs}
    with tempfile.TemporaryDirectory(prefix="convae-bench-") as tmp:
        runs = [run_one(model, epochs[model], args.data_dir, args.threads, Path(tmp))
                for model in args.models.split(",")]
    if args.out.exists():  # keep the other presets' results when only some were rerun
        previous = read_json(args.out).get("runs", [])
        rerun = {run["model"] for run in runs}
        runs = [run for run in previous if run["model"] not in rerun] + runs
        runs.sort(key=lambda run: list(TARGETS).index(run["model"]) if run["model"] in TARGETS else 99)
    report = {
        "benchmark": "MNIST classification: test accuracy (10,000 test images) and training time",
        "dataset": "mnist: 48,000 train / 12,000 val (80/20 split of the training set, seed 0) / 10,000 test",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": "cpu",
        },
        "note": args.note,
        "runs": runs,
        "command": shlex.join(["python", "benchmarks/classify.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit(),
    }
    write_json(args.out, report)
    for run in runs:
        print(f"{run['model']}: {100 * run['test_accuracy']:.2f}% test accuracy after {run['epochs']} epochs, "
              f"{run['train_seconds']:.0f} s training ({run['wall_seconds']:.0f} s wall); target "
              f"{100 * run['target']:.1f}%: {'reached' if run['reached_target'] else 'NOT reached'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
