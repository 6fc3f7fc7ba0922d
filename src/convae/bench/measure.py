"""What the speed suite measures besides seconds: the machine's matmul peak, a step's FLOPs,
peak memory, and the test RMSE each side reaches."""

from __future__ import annotations

import math
import resource
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


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
