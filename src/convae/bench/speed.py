"""Side-by-side training speed: convae's Trainer against the reference training loop.

The reference examples train the way their readers run them: a torchvision dataset whose
``__getitem__`` turns one image at a time into a PIL image and then a float tensor
(``ToTensor``, plus a flatten for the fully connected model), a ``DataLoader`` that collates
those into batches, and the example's optimizer and loss. convae's Trainer trains the same
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
import gzip
import math
import os
import resource
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from convae.bench.provenance import commit
from convae.core.errors import DataError
from convae.data import ImageSet, load_splits
from convae.data.paths import data_roots
from convae.models import build_model, get_preset, resolve_params
from convae.run import read_metrics
from convae.training import TrainConfig, Trainer, default_threads


@dataclass(frozen=True)
class Job:
    """One preset trained both ways on the data its reference example used."""

    name: str
    dataset: str
    model: str
    args: dict[str, Any] = field(default_factory=dict)
    #: The reference's epoch count (the suite may run fewer; the result says how many).
    epochs: int = 10
    #: The reference feeds the fully connected model flat 784-vectors (a Flatten transform).
    flatten: bool = False
    #: Train (and test) on the first N images only, for models too slow for the full set here.
    subset: int | None = None


JOBS: tuple[Job, ...] = (
    Job("fc", "mnist", "fc", {}, 10, flatten=True),
    Job("unpool", "mnist", "unpool", {"maps": 1, "pool": 4}, 5),
    Job("conv-pool", "cifar10", "conv-pool", {}, 10),
    Job("conv", "mnist", "conv", {}, 10, subset=6000),
)

#: Epochs the full suite runs per job: fc as its reference does; the conv presets fewer,
#: to keep the suite near 15 minutes on 2 shared cores (the results record both numbers).
SUITE_EPOCHS = {"fc": 10, "unpool": 2, "conv-pool": 2, "conv": 1}
#: Training images per job in the full suite (None: the whole training split).
SUITE_SUBSETS: dict[str, int | None] = {"fc": None, "unpool": None, "conv-pool": None, "conv": 6000}
#: For a machine whose cores are shared with other work: the same comparisons on less data.
QUICK_EPOCHS = {"fc": 2, "unpool": 1, "conv-pool": 1, "conv": 1}
QUICK_SUBSETS: dict[str, int | None] = {"fc": None, "unpool": 20000, "conv-pool": 10000, "conv": 2000}


# -- the reference side ------------------------------------------------------------------
class CIFAR10Arrays(torch.utils.data.Dataset):
    """torchvision's CIFAR10 ``__getitem__`` over the same HWC uint8 array it would hold.

    The pickled CIFAR-10 batches are not available offline, so the pixels come from the
    PNG copy; per item the work is exactly torchvision's: ``Image.fromarray`` then the transform.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        img, target = self.data[index], self.targets[index]
        return self.transform(Image.fromarray(img)), target


def mnist_reference_dataset(train: bool, root: Path, transform: Callable) -> torch.utils.data.Dataset:
    """The real ``torchvision.datasets.MNIST`` over a temporary unpacked copy of the IDX files."""
    from torchvision import datasets

    return datasets.MNIST(str(root), train=train, transform=transform, download=False)


def unpack_mnist(work: Path, data_dir: str | None) -> Path:
    """Unpack MNIST's .gz files into ``work/MNIST/raw`` (torchvision unpacks next to the
    files it is given, and the shared data folder must stay untouched)."""
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for root in data_roots(data_dir):
        raw = root / "MNIST" / "raw"
        if all((raw / f"{n}.gz").is_file() or (raw / n).is_file() for n in names):
            target = work / "MNIST" / "raw"
            target.mkdir(parents=True, exist_ok=True)
            for n in names:
                if (raw / n).is_file():
                    shutil.copyfile(raw / n, target / n)
                else:
                    with gzip.open(raw / f"{n}.gz", "rb") as src, open(target / n, "wb") as dst:
                        shutil.copyfileobj(src, dst)
            return work
    raise DataError(f"speed benchmark: MNIST IDX files not found under {', '.join(map(str, data_roots(data_dir)))}")


def reference_model(job: Job, ours: nn.Module, shape: tuple[int, int, int]) -> nn.Module:
    """The model as the reference writes it, starting from convae's initial weights."""
    if job.flatten:
        c, h, w = shape
        hidden = resolve_params(job.model, job.args)["hidden"]
        model = nn.Sequential(nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, c * h * w), nn.Sigmoid())
        with torch.no_grad():
            for mine, theirs in zip(model.parameters(), ours.parameters(), strict=True):
                mine.copy_(theirs)
        return model
    import copy

    return copy.deepcopy(ours)


def reference_epoch(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, loss_fn: Callable) -> float:
    """One epoch of the reference loop, written the way the examples write it."""
    model.train()
    running, seen = 0.0, 0
    for x, _ in loader:
        output = model(x)
        loss = loss_fn(output, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running += loss.item() * x.size(0)
        seen += x.size(0)
    return running / max(seen, 1)


def expert_epoch(model: nn.Module, images: torch.Tensor, batch_size: int, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable, generator: torch.Generator) -> float:
    """One epoch as an expert writes it by hand: the whole split as one float tensor in memory,
    a fresh permutation per epoch, a slice per step, and nothing else (no checks, no logs)."""
    model.train()
    running, n = 0.0, len(images)
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        x = images[order[start:start + batch_size]]
        loss = loss_fn(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running += loss.item() * x.size(0)
    return running / max(n, 1)


# -- measuring --------------------------------------------------------------------------
def matmul_peak(threads: int, size: int = 1024, repeats: int = 7) -> float:
    """Best sgemm GFLOP/s of ``size``³ float32 matmuls on ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - started) / 4)
    return 2 * size**3 / best / 1e9


def train_flops_per_image(model: nn.Module, shape: tuple[int, ...], loss_fn: Callable, batch: int = 16) -> float:
    """Forward + backward FLOPs per image as torch's FlopCounterMode counts them (matmuls and convs)."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model).train()
    x = torch.rand(batch, *shape)
    counter = FlopCounterMode(display=False)
    with counter:
        out = probe(x)
        loss_fn(out, x.reshape(out.shape)).backward()
    return counter.get_total_flops() / batch


class PeakRSS:
    """Peak resident memory of this process during a block (Linux: resets VmHWM on entry).

    Both sides share one process, so the figure includes everything already loaded; the
    ``growth`` (peak minus the RSS at entry) is what the training loop itself added.
    """

    def __enter__(self) -> "PeakRSS":
        self.reset = _write("/proc/self/clear_refs", "5")
        self.start_mb = _status_mb("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        peak = _status_mb("VmHWM") if self.reset else None
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.peak_mb = round(peak, 1)
        self.growth_mb = round(peak - (self.start_mb or 0.0), 1) if self.reset else None


def _write(path: str, text: str) -> bool:
    try:
        with open(path, "w") as handle:
            handle.write(text)
        return True
    except OSError:
        return False


def _status_mb(key: str) -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@torch.no_grad()
def test_rmse(model: nn.Module, images: torch.Tensor, flatten: bool, batch: int = 500) -> float:
    """sqrt(mean squared error per pixel) over the test split; the same code for both sides."""
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch):
        x = images[start : start + batch].float().div_(255)
        x = x.flatten(1) if flatten else x
        total += F.mse_loss(model(x).reshape(x.shape), x, reduction="sum").item()
    return math.sqrt(total / images.numel())


# -- the suite --------------------------------------------------------------------------
def run_job(
    job: Job,
    splits: tuple[ImageSet, ImageSet],
    work: Path,
    mnist_root: Path | None,
    *,
    epochs: int,
    threads: int,
    seed: int,
    limit: int | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    from torchvision import transforms

    train, test = splits
    limit = min(n for n in (limit, job.subset, len(train)) if n)
    if limit < len(train):
        train, test = train.subset(range(limit)), test.subset(range(min(limit, len(test))))
    preset = get_preset(job.model)
    batch_size, lr, loss_name = (preset.training[k] for k in ("batch_size", "lr", "loss"))
    # The tutorial and the expert write torch's own losses (convae's fused BCE is convae's side only).
    loss_fn = {"bce": F.binary_cross_entropy, "mse": F.mse_loss, "l1": F.l1_loss}[loss_name]
    torch.set_num_threads(threads)

    # Same initial weights on both sides: the Trainer seeds torch with ``seed`` and then
    # builds the model; doing the same here gives the reference model those weights.
    torch.manual_seed(seed)
    ours_init = build_model(job.model, train.shape, job.args)
    model = reference_model(job, ours_init, train.shape)
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
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # The expert's side: the same model and initial weights, the split as one float tensor.
    expert_model = reference_model(job, ours_init, train.shape)
    expert_images = train.images.float().div(255)
    expert_images = expert_images.flatten(1) if job.flatten else expert_images
    expert_optimizer = torch.optim.Adam(expert_model.parameters(), lr=lr)
    expert_generator = torch.Generator().manual_seed(seed)

    run_dir = work / f"run-{job.name}"
    config = TrainConfig(dataset=train.name, model=job.model, model_args=dict(job.args), seed=seed, threads=threads,
                         device="cpu")
    ref_seconds: list[float] = []
    our_seconds: list[float] = []
    expert_seconds: list[float] = []
    ref_loss = expert_loss = math.nan
    expert_mem: list[PeakRSS] = []
    ref_mem: list[PeakRSS] = []
    our_mem: list[PeakRSS] = []
    loads: list[tuple[float, float, float]] = [os.getloadavg()]
    overhead = 0.0
    trainer: Trainer | None = None
    quiet = _quiet_console()

    def reference() -> None:
        nonlocal ref_loss
        torch.set_num_threads(threads)
        with PeakRSS() as mem:
            started = time.perf_counter()
            ref_loss = reference_epoch(model, loader, optimizer, loss_fn)
            ref_seconds.append(time.perf_counter() - started)
        ref_mem.append(mem)

    def expert() -> None:
        nonlocal expert_loss
        torch.set_num_threads(threads)
        with PeakRSS() as mem:
            started = time.perf_counter()
            expert_loss = expert_epoch(expert_model, expert_images, batch_size, expert_optimizer, loss_fn,
                                       expert_generator)
            expert_seconds.append(time.perf_counter() - started)
        expert_mem.append(mem)

    def convae(epoch: int) -> None:
        nonlocal overhead, trainer
        started = time.perf_counter()
        with PeakRSS() as mem:
            trainer = Trainer(dataclasses_replace(config, epochs=epoch + 1), run_dir, train_set=train, test_set=test,
                              progress=False, console=quiet)
            trainer.fit(resume=epoch > 0)
        our_mem.append(mem)
        seconds = read_metrics(run_dir)[-1]["seconds"]
        our_seconds.append(seconds)
        overhead += time.perf_counter() - started - seconds

    sides: list[Callable[[int], None]] = [lambda _: reference(), lambda _: expert(), convae]
    for epoch in range(epochs):
        # Rotate who goes first, so a burst of outside load does not always hit one side.
        for side in sides[epoch % 3:] + sides[:epoch % 3]:
            side(epoch)
        loads.append(os.getloadavg())
        log(f"  {job.name} epoch {epoch + 1}/{epochs}: tutorial {ref_seconds[-1]:.2f}s, expert "
            f"{expert_seconds[-1]:.2f}s, convae {our_seconds[-1]:.2f}s (load {loads[-1][0]:.2f})")

    assert trainer is not None and trainer.model is not None
    our_loss = read_metrics(run_dir)[-1]["train_loss"]
    images = len(train)
    flops = train_flops_per_image(trainer.model, train.shape, loss_fn)
    ref_total, our_total, expert_total = sum(ref_seconds), sum(our_seconds), sum(expert_seconds)
    ref_rmse = test_rmse(model, test.images, job.flatten)
    expert_rmse = test_rmse(expert_model, test.images, job.flatten)
    our_rmse = test_rmse(trainer.model, test.images, False)
    return {
        "job": job.name,
        "dataset": train.name,
        "model": job.model,
        "model_args": {k: list(v) if isinstance(v, tuple) else v for k, v in resolve_params(job.model, job.args).items()},
        "train_images": images,
        "batch_size": batch_size,
        "optimizer": "adam",
        "lr": lr,
        "loss": loss_name,
        "epochs": epochs,
        "reference_epochs": job.epochs,
        "threads": threads,
        "seed": seed,
        "train_gflop_per_epoch": round(flops * images / 1e9, 2),
        "reference": _side(ref_seconds, images, flops, ref_loss, ref_rmse, ref_mem),
        "expert": _side(expert_seconds, images, flops, expert_loss, expert_rmse, expert_mem),
        "convae": {**_side(our_seconds, images, flops, our_loss, our_rmse, our_mem),
                   "setup_and_checkpoint_seconds": round(overhead, 2)},
        "speedup": round(ref_total / our_total, 2) if our_total > 0 else None,
        "speedup_median_epoch": round(statistics.median(ref_seconds) / statistics.median(our_seconds), 2),
        "speedup_vs_expert": round(expert_total / our_total, 2) if our_total > 0 else None,
        "speedup_vs_expert_median_epoch": round(statistics.median(expert_seconds) / statistics.median(our_seconds), 2),
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


def dataclasses_replace(config: TrainConfig, **changes: Any) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


def _quiet_console() -> Any:
    from rich.console import Console

    return Console(file=open(os.devnull, "w"), stderr=False)


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


def markdown(results: dict[str, Any]) -> str:
    """The results as the three-sided table the README shows."""
    peak = results["matmul_peak_gflop_per_s"]
    lines = [
        f"Training speed on {results['threads']} CPU thread(s), commit {results.get('commit', '?')}; matmul peak "
        f"measured in the same run: {peak['start']}–{peak['end']} GFLOP/s. Times are the training epochs only; the "
        "tutorial loop, the expert's in-memory loop and convae take turns epoch by epoch in one process.",
        "",
        "| job | data (train images), batch | epochs (reference's) | tutorial s | expert s | convae s "
        "| convae vs tutorial | convae vs expert | GFLOP/s tutorial / expert / convae (convae's share of peak) "
        "| train loss tutorial / expert / convae | test RMSE tutorial / expert / convae | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["jobs"]:
        ref, expert, ours = row["reference"], row["expert"], row["convae"]
        load = row["load_average_1min"]
        lines.append(
            f"| {row['job']} | {row['dataset']} ({row['train_images']:,}), {row['batch_size']} "
            f"| {row['epochs']} ({row['reference_epochs']}) "
            f"| {ref['seconds']:.1f} | {expert['seconds']:.1f} | {ours['seconds']:.1f} "
            f"| **{row['speedup']:.2f}×** | **{row['speedup_vs_expert']:.2f}×** "
            f"| {ref['gflop_per_s']:.1f} / {expert['gflop_per_s']:.1f} / {ours['gflop_per_s']:.1f} "
            f"({ours['fraction_of_matmul_peak']:.0%}) "
            f"| {ref['final_train_loss']:.4f} / {expert['final_train_loss']:.4f} / {ours['final_train_loss']:.4f} "
            f"| {ref['test_rmse']:.4f} / {expert['test_rmse']:.4f} / {ours['test_rmse']:.4f} "
            f"| {min(load):.1f}–{max(load):.1f} |"
        )
    return "\n".join(lines) + "\n"
