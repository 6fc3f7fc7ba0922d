"""Side-by-side training speed: convae's Trainer against the reference training loop.

The tutorial's loop and the expert's are in reference.py, what is measured besides seconds in
measure.py, the table in speed_report.py; this file is the harness. convae's Trainer trains the same
model (same initial weights, batch size, optimizer, learning rate, loss and epochs) from an
in-memory uint8 tensor.

Both run in one process and alternate epoch by epoch (the Trainer resumes its run for each
next epoch, which is bit-identical to an uninterrupted run), so load from other processes
on a shared machine hits both alike. Times are for the training epochs only (the data is
loaded once, before either side is timed); the machine's matmul peak is measured in the
same run so the achieved GFLOP/s can be read against it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from rich.console import Console

from convae.bench.jobs import JOBS, QUICK_EPOCHS, QUICK_SUBSETS, SUITE_EPOCHS, SUITE_SUBSETS, Job
from convae.bench.measure import PeakRSS, matmul_peak, test_rmse, train_flops_per_image
from convae.bench.provenance import commit
from convae.bench.reference import (
    CIFAR10Arrays,
    expert_epoch,
    mnist_reference_dataset,
    reference_epoch,
    reference_model,
    unpack_mnist,
)
from convae.bench.speed_report import markdown
from convae.core.errors import DataError
from convae.data import ImageSet, load_splits
from convae.models import build_model, get_preset, resolve_params
from convae.run import read_metrics
from convae.training import TrainConfig, Trainer, default_threads

__all__ = ["JOBS", "Job", "markdown", "plan", "run_suite"]


def plan(names: list[str] | None, quick: bool, epochs: int | None) -> tuple[list[str], dict[str, int],
                                                                             dict[str, int | None]]:
    """(jobs, epochs per job, training images per job): the one plan `convae bench speed` and
    benchmarks/speed.py both run; ``quick`` is for a machine whose cores are shared."""
    names = names or [job.name for job in JOBS]
    if epochs is not None and epochs < 1:
        raise DataError(f"--epochs must be at least 1, got {epochs}")
    per_job, subsets = (QUICK_EPOCHS, QUICK_SUBSETS) if quick else (SUITE_EPOCHS, SUITE_SUBSETS)
    return names, {name: epochs or per_job.get(name, 1) for name in names}, subsets


# -- the suite --------------------------------------------------------------------------
class _ThreeSides:
    """One job's three sides, built on the same initial weights, batch size, optimizer and loss."""

    def __init__(self, job: Job, train: ImageSet, test: ImageSet, work: Path, mnist_root: Path | None,
                 threads: int, seed: int) -> None:
        from torchvision import transforms

        self.job, self.train, self.test, self.threads = job, train, test, threads
        preset = get_preset(job.model)
        self.batch_size, self.lr, self.loss_name = (preset.training[k] for k in ("batch_size", "lr", "loss"))
        # The tutorial and the expert write torch's own losses (convae's fused BCE is convae's side only).
        self.loss_fn = {"bce": F.binary_cross_entropy, "mse": F.mse_loss, "l1": F.l1_loss}[self.loss_name]
        torch.set_num_threads(threads)
        # Same initial weights on both sides: the Trainer seeds torch with ``seed`` and then
        # builds the model; doing the same here gives the reference model those weights.
        torch.manual_seed(seed)
        ours_init = build_model(job.model, train.shape, job.args)
        self.model = reference_model(job, ours_init, train.shape)
        steps = [transforms.ToTensor()] + ([transforms.Lambda(torch.flatten)] if job.flatten else [])
        transform = transforms.Compose(steps)
        if job.dataset == "mnist":
            assert mnist_root is not None
            dataset = mnist_reference_dataset(True, mnist_root, transform)
            if len(dataset) > len(train):
                dataset = torch.utils.data.Subset(dataset, range(len(train)))
        else:
            dataset = CIFAR10Arrays(train.images, train.labels, transform)
        torch.manual_seed(seed)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, shuffle=True)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        # The expert's side: the same model and initial weights, the split as one float tensor.
        self.expert_model = reference_model(job, ours_init, train.shape)
        images = train.images.float().div(255)
        self.expert_images = images.flatten(1) if job.flatten else images
        self.expert_optimizer = torch.optim.Adam(self.expert_model.parameters(), lr=self.lr)
        self.expert_generator = torch.Generator().manual_seed(seed)
        self.run_dir = work / f"run-{job.name}"
        self.config = TrainConfig(dataset=train.name, model=job.model, model_args=dict(job.args), seed=seed,
                                  threads=threads, device="cpu")
        self.seconds: dict[str, list[float]] = {"reference": [], "expert": [], "convae": []}
        self.memory: dict[str, list[PeakRSS]] = {"reference": [], "expert": [], "convae": []}
        self.loss = {"reference": math.nan, "expert": math.nan}
        self.overhead = 0.0
        self.trainer: Trainer | None = None
        self.quiet = Console(file=open(os.devnull, "w"), stderr=False)

    def reference(self, epoch: int) -> None:
        self._timed("reference", lambda: reference_epoch(self.model, self.loader, self.optimizer, self.loss_fn))

    def expert(self, epoch: int) -> None:
        self._timed("expert", lambda: expert_epoch(self.expert_model, self.expert_images, self.batch_size,
                                                   self.expert_optimizer, self.loss_fn, self.expert_generator))

    def _timed(self, side: str, epoch: Callable[[], float]) -> None:
        torch.set_num_threads(self.threads)
        with PeakRSS() as mem:
            started = time.perf_counter()
            self.loss[side] = epoch()
            self.seconds[side].append(time.perf_counter() - started)
        self.memory[side].append(mem)

    def convae(self, epoch: int) -> None:
        """One more epoch of the run (a resume, bit-identical to an uninterrupted run); its own clock."""
        started = time.perf_counter()
        with PeakRSS() as mem:
            self.trainer = Trainer(dataclasses.replace(self.config, epochs=epoch + 1), self.run_dir,
                                   train_set=self.train, test_set=self.test, progress=False, console=self.quiet)
            self.trainer.fit(resume=epoch > 0)
        self.memory["convae"].append(mem)
        seconds = read_metrics(self.run_dir)[-1]["seconds"]
        self.seconds["convae"].append(seconds)
        self.overhead += time.perf_counter() - started - seconds


def run_job(job: Job, splits: tuple[ImageSet, ImageSet], work: Path, mnist_root: Path | None, *, epochs: int,
            threads: int, seed: int, limit: int | None, log: Callable[[str], None]) -> dict[str, Any]:
    """Train one job three ways, taking turns epoch by epoch; the result row."""
    train, test = splits
    limit = min(n for n in (limit, job.subset, len(train)) if n)
    if limit < len(train):
        train, test = train.subset(range(limit)), test.subset(range(min(limit, len(test))))
    sides = _ThreeSides(job, train, test, work, mnist_root, threads, seed)
    order: list[Callable[[int], None]] = [sides.reference, sides.expert, sides.convae]
    loads: list[tuple[float, float, float]] = [os.getloadavg()]
    for epoch in range(epochs):
        # Rotate who goes first, so a burst of outside load does not always hit one side.
        for side in order[epoch % 3:] + order[:epoch % 3]:
            side(epoch)
        loads.append(os.getloadavg())
        s = sides.seconds
        log(f"  {job.name} epoch {epoch + 1}/{epochs}: tutorial {s['reference'][-1]:.2f}s, expert "
            f"{s['expert'][-1]:.2f}s, convae {s['convae'][-1]:.2f}s (load {loads[-1][0]:.2f})")
    return _result(sides, epochs, seed, loads)


def _result(sides: _ThreeSides, epochs: int, seed: int, loads: list[tuple[float, float, float]]) -> dict[str, Any]:
    job, train, test, seconds = sides.job, sides.train, sides.test, sides.seconds
    assert sides.trainer is not None and sides.trainer.model is not None
    ours = sides.trainer.model
    our_loss, ref_loss = read_metrics(sides.run_dir)[-1]["train_loss"], sides.loss["reference"]
    images = len(train)
    flops = train_flops_per_image(ours, train.shape, sides.loss_fn)
    ref_total, our_total, expert_total = (sum(seconds[k]) for k in ("reference", "convae", "expert"))
    ref_rmse = test_rmse(sides.model, test.images, job.flatten)
    our_rmse = test_rmse(ours, test.images, False)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    return {
        "job": job.name, "dataset": train.name, "model": job.model,
        "model_args": {k: list(v) if isinstance(v, tuple) else v for k, v in resolve_params(job.model, job.args).items()},
        "train_images": images, "batch_size": sides.batch_size, "optimizer": "adam", "lr": sides.lr,
        "loss": sides.loss_name, "epochs": epochs, "reference_epochs": job.epochs, "threads": sides.threads,
        "seed": seed, "train_gflop_per_epoch": round(flops * images / 1e9, 2),
        "reference": _side(seconds["reference"], images, flops, ref_loss, ref_rmse, sides.memory["reference"]),
        "expert": _side(seconds["expert"], images, flops, sides.loss["expert"],
                        test_rmse(sides.expert_model, test.images, job.flatten), sides.memory["expert"]),
        "convae": {**_side(seconds["convae"], images, flops, our_loss, our_rmse, sides.memory["convae"]),
                   "setup_and_checkpoint_seconds": round(sides.overhead, 2)},
        "speedup": round(ref_total / our_total, 2) if our_total > 0 else None,
        "speedup_median_epoch": round(median["reference"] / median["convae"], 2),
        "speedup_vs_expert": round(expert_total / our_total, 2) if our_total > 0 else None,
        "speedup_vs_expert_median_epoch": round(median["expert"] / median["convae"], 2),
        "train_loss_relative_difference": round(abs(our_loss - ref_loss) / ref_loss, 4),
        "test_rmse_relative_difference": round(abs(our_rmse - ref_rmse) / ref_rmse, 4),
        "load_average_1min": [round(load[0], 2) for load in loads],
    }


def _side(seconds: list[float], images: int, flops: float, loss: float, rmse: float, mem: list[PeakRSS]) -> dict[str, Any]:
    total = sum(seconds)
    return {
        "seconds": round(total, 2),
        "epoch_seconds": [round(s, 3) for s in seconds],
        "images_per_s": round(images * len(seconds) / total, 1),
        "gflop_per_s": round(flops * images * len(seconds) / total / 1e9, 2),
        "final_train_loss": round(loss, 6),
        "test_rmse": round(rmse, 5),
        "peak_rss_mb": max(m.peak_mb for m in mem),
        "peak_rss_growth_mb": max((m.growth_mb for m in mem if m.growth_mb is not None), default=None),
    }


def run_suite(
    names: list[str] | None = None,
    *,
    data_dir: str | None = None,
    epochs: dict[str, int] | None = None,
    subsets: dict[str, int | None] | None = None,
    threads: int | None = None,
    seed: int = 0,
    limit: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the chosen jobs (all by default) and return the results as one JSON-able dict.

    ``subsets`` overrides how many training images a job uses. ``epochs`` overrides the number of epochs per job (the slow conv presets are usually
    run for fewer than their references' epochs; the result records both). ``limit`` trains
    on the first ``limit`` images only (a smoke test, not a measurement).
    """
    jobs = [job for job in JOBS if names is None or job.name in names]
    unknown = sorted(set(names or []) - {job.name for job in JOBS})
    if unknown:
        raise DataError(f"speed benchmark: unknown job(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(job.name for job in JOBS)}")
    threads = threads or default_threads()
    started = time.perf_counter()
    size = 256 if limit else 1024  # a smoke test need not measure the machine well
    peak = matmul_peak(threads, size)
    log(f"matmul peak: {peak:.1f} GFLOP/s on {threads} thread(s)")
    results = []
    with tempfile.TemporaryDirectory(prefix="convae-speed-") as tmp:
        work = Path(tmp)
        mnist_root = unpack_mnist(work / "data", data_dir) if any(j.dataset == "mnist" for j in jobs) else None
        cache: dict[str, tuple[ImageSet, ImageSet]] = {}
        for job in jobs:
            if job.dataset not in cache:
                cache[job.dataset] = load_splits(job.dataset, data_dir=data_dir)
            n = (epochs or {}).get(job.name, job.epochs)
            if subsets and job.name in subsets:
                job = dataclasses.replace(job, subset=subsets[job.name])
            log(f"{job.name}: {job.model} on {job.dataset}, {n} epoch(s)")
            results.append(run_job(job, cache[job.dataset], work, mnist_root, epochs=n, threads=threads,
                                   seed=seed, limit=limit, log=log))
    peak_after = matmul_peak(threads, size)
    for row in results:
        for side in ("reference", "expert", "convae"):
            row[side]["fraction_of_matmul_peak"] = round(row[side]["gflop_per_s"] / max(peak, peak_after), 3)
    return {
        "benchmark": "speed",
        "commit": commit(),
        "how": "tutorial loop (torchvision dataset + ToTensor + DataLoader, the example's optimizer), an expert's "
               "plain loop over the split as one in-memory float tensor, and convae's Trainer, on the same model, "
               "initial weights, batch size, optimizer, loss and epochs; one process, the three taking turns epoch "
               "by epoch; times are training epochs only",
        "matmul_peak_gflop_per_s": {"start": round(peak, 1), "end": round(peak_after, 1)},
        "threads": threads,
        "limit": limit,
        "total_seconds": round(time.perf_counter() - started, 1),
        "jobs": results,
    }
