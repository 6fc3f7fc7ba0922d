"""Inference speed of an exported run: torch eager, torch.compile and onnxruntime, side by side.

Run: ``python benchmarks/export.py`` (needs real MNIST and the CIFAR-10 PNG copy via
$CONVAE_DATA or ../shared/data). For ``conv`` and ``unpool`` on MNIST and ``conv-pool`` on
CIFAR-10 it trains a short run (one epoch on a subset: speed does not depend on how well a
model is trained), exports it with ``convae export``, and times the reconstruction of real
test images at batch 1 and batch 256 with each engine. The engines take turns (round-robin,
``REPEATS`` rounds, the median kept) so a busy moment hits them alike. Writes
benchmarks/results/export.json and export.md with the commit.
"""

from __future__ import annotations

from convae.core.openmp import set_openmp_wait_policy

set_openmp_wait_policy()  # first, before torch, as in the `convae` command

# isort: split
import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from _common import RESULTS, commit, data_root, machine, write_results

from convae import runtime
from convae.applications.export import export_run
from convae.data import load_splits
from convae.run import Run
from convae.training import TrainConfig, Trainer

CASES = [("conv", "mnist"), ("unpool", "mnist"), ("conv-pool", "cifar10")]
BATCHES = (1, 256)
REPEATS = 5
SINGLE_IMAGES = 200  # images timed one at a time per round (batch 1)
BATCHED_IMAGES = 2048  # images timed per round at batch 256


def train_run(preset: str, dataset: str, root: Path, data_dir: str, limit: int) -> tuple[Run, np.ndarray]:
    """A one-epoch run on the first ``limit`` training images, and the test images as floats."""
    train, test = load_splits(dataset, data_dir=data_dir)
    config = TrainConfig(dataset=dataset, model=preset, epochs=1, seed=0, device="cpu", data_dir=data_dir)
    Trainer(config, root / preset, train_set=train.subset(range(limit)), test_set=test.subset(range(1000)),
            progress=False).fit()
    return Run.open(root / preset), test.images[:BATCHED_IMAGES].float().div(255).numpy()


def engines(run: Run, onnx_path: Path, threads: int) -> dict[str, Callable[[np.ndarray], Any]]:
    model = run.model()
    compiled = torch.compile(model)
    exported = runtime.Exported.load(onnx_path, threads=threads)

    def eager(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    def compiled_call(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return compiled(torch.from_numpy(x))

    def onnx(x: np.ndarray) -> Any:
        return exported.session.run(["reconstruction"], {runtime.INPUT: x})

    return {"torch eager": eager, "torch.compile": compiled_call, "onnxruntime": onnx}


def time_round(call: Callable[[np.ndarray], Any], images: np.ndarray, batch: int) -> float:
    """Images per second for one pass over ``images`` in batches of ``batch``."""
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        call(images[start:start + batch])
    return len(images) / (time.perf_counter() - started)


def measure(run: Run, onnx_path: Path, images: np.ndarray, threads: int) -> list[dict[str, Any]]:
    calls = engines(run, onnx_path, threads)
    rows = []
    for batch in BATCHES:
        data = images[:SINGLE_IMAGES] if batch == 1 else images[:BATCHED_IMAGES]
        warm_started = {}
        for name, call in calls.items():  # warm-up (and torch.compile's compilation) outside the timing
            started = time.perf_counter()
            call(data[:batch])
            call(data[:batch])
            warm_started[name] = time.perf_counter() - started
        speeds: dict[str, list[float]] = {name: [] for name in calls}
        for round_ in range(REPEATS):
            order = list(calls) if round_ % 2 == 0 else list(reversed(calls))
            for name in order:
                speeds[name].append(time_round(calls[name], data, batch))
        for name, values in speeds.items():
            rows.append({"preset": run.config.model_name, "dataset": run.config.training.dataset, "batch": batch,
                         "engine": name, "images_per_s": statistics.median(values), "rounds": values,
                         "warm_up_s": warm_started[name], "images_per_round": len(data)})
        print("  ".join(f"{r['preset']} b{batch} {r['engine']}: {r['images_per_s']:,.0f} img/s"
                        for r in rows if r["batch"] == batch))
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Inference speed: torch eager vs torch.compile vs onnxruntime (CPU, {result['threads']} threads)",
        "",
        f"commit {result['commit']}, {result['machine']['date']}; reconstruction of real test images, images/s "
        f"(median of {REPEATS} interleaved rounds; higher is better). **Bold**: the fastest engine of the row.",
        "",
        "| preset | data | batch | torch eager | torch.compile | onnxruntime | fastest |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    keys = sorted({(r["preset"], r["dataset"], r["batch"]) for r in result["rows"]},
                  key=lambda k: ([c[0] for c in CASES].index(k[0]), k[2]))
    for preset, dataset, batch in keys:
        row = {r["engine"]: r["images_per_s"] for r in result["rows"]
               if (r["preset"], r["dataset"], r["batch"]) == (preset, dataset, batch)}
        best = max(row, key=row.get)
        cells = [f"**{row[e]:,.0f}**" if e == best else f"{row[e]:,.0f}"
                 for e in ("torch eager", "torch.compile", "onnxruntime")]
        ratio = row[best] / row["torch eager"]
        lines.append(f"| {preset} | {dataset} | {batch} | {' | '.join(cells)} | {best} ({ratio:.2f}× eager) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=4000, help="training images for the short runs")
    parser.add_argument("--threads", type=int, default=None, help="threads for every engine (default: the cores)")
    parser.add_argument("--name", default="export", help="result file stem")
    args = parser.parse_args()
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    data_dir = str(data_root())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, dataset in CASES:
            run, images = train_run(preset, dataset, Path(tmp), data_dir, args.limit)
            onnx_path = export_run(run, Path(tmp) / f"{preset}.onnx", "reconstruct").path
            rows += measure(run, onnx_path, images, threads)
    result = {"commit": commit(), "threads": threads, "rows": rows, "machine": machine()}
    print(f"wrote {write_results(args.name + '.json', result)}")
    md = RESULTS / f"{args.name}.md"
    md.write_text(markdown(result), encoding="utf-8")
    print(f"wrote {md}")


if __name__ == "__main__":
    main()
