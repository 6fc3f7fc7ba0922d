"""The other two sides of the speed suite: the tutorial's loop and an expert's plain loop.

The reference examples train the way their readers run them: a torchvision dataset whose
``__getitem__`` turns one image at a time into a PIL image and then a float tensor
(``ToTensor``, plus a flatten for the fully connected model), a ``DataLoader`` that collates
those into batches, and the example's optimizer and loss. The expert keeps the split as one
float tensor in memory and slices batches from a seeded permutation.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from convae.bench.jobs import Job
from convae.core.errors import DataError
from convae.data.paths import data_roots
from convae.models import resolve_params


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
