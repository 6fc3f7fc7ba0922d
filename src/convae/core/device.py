"""Device, threads and seeding: what every verb that runs a model sets up the same way."""

from __future__ import annotations

import os
import random
import warnings

import torch

from convae.core.errors import ConvaeError


def check_device_name(name: str) -> str:
    """auto, cpu, cuda or cuda:N, or one line saying so (whether CUDA is there is pick_device's)."""
    if not (name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ConvaeError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """auto: CUDA when present, else CPU. Under torchrun, plain "cuda" means this process's GPU."""
    if check_device_name(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConvaeError(f"--device {name}: CUDA is not available on this machine")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 arithmetic is native on ``device``: a CUDA GPU that supports it, or a CPU with
    AVX-512 BF16 or AMX units. Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own checks
        return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` made concrete for ``device`` (bf16 where it is native, else fp32); others as given."""
    if precision != "auto":
        return precision
    return "bf16" if has_fast_bf16(device) else "fp32"


def seed_everything(seed: int, deterministic: bool) -> None:
    """One seed for Python, NumPy and torch; ``deterministic`` turns on deterministic algorithms."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy ships with torch
        pass
    # Setting it (even to False) imports torch._inductor: 1.7 s of every command's start-up.
    if deterministic or torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    # Deterministic mode also NaN-fills every new tensor, a debugging aid that made CPU
    # training ~30 % slower here; no layer we use reads uninitialized memory.
    torch.utils.deterministic.fill_uninitialized_memory = False
    # MaxUnpool scatters to the argmax indices of a max-pool, which never collide, so its
    # result is deterministic even though torch warns about the op in general.
    warnings.filterwarnings("ignore", message="max_unpooling2d_forward_out does not have a deterministic")
    torch.backends.cudnn.benchmark = not deterministic


def default_threads(processes: int = 1) -> int:
    """The cores this process may use, shared among ``processes`` training processes on this
    machine; an explicit ``OMP_NUM_THREADS`` (torchrun sets 1 per process by default) wins."""
    explicit = os.environ.get("OMP_NUM_THREADS", "")
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, processes))


def fits_on_device(images: torch.Tensor, device: torch.device) -> bool:
    """Keep a uint8 dataset on the GPU when it takes under a quarter of the free memory."""
    if device.type != "cuda":
        return False
    free, _total = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() < free // 4


def free_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device`` (None when the system does not say)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def gib(size: float) -> str:
    """A byte count for messages: '3.2 GiB', '512 MiB'."""
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"
