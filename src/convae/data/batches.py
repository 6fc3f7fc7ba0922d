"""Mini-batches straight from an in-memory uint8 tensor.

No DataLoader, no workers, no per-item Python: each batch is one ``index_select`` on the
uint8 images, moved to the device as uint8 (4× less traffic) and scaled to float [0, 1]
there. The order of an epoch is a pure function of (seed, epoch), so a run resumed in the
middle of an epoch reproduces the remaining batches exactly without storing any state.
"""

from __future__ import annotations

from typing import Iterator

import torch

from convae.core.errors import DataError

_SEED_STRIDE = 1_000_003


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of epoch ``epoch``: ``randperm(n)`` seeded with seed·1000003 + epoch."""
    g = torch.Generator().manual_seed((int(seed) * _SEED_STRIDE + int(epoch)) % 2**64)
    return torch.randperm(n, generator=g)


class Batches:
    """Iterate one epoch of float32 batches in [0, 1] (or ``(x, y)`` pairs with labels).

    ``start_step`` skips the first batches of the epoch (for resuming). ``len()`` is the
    number of batches in the whole epoch (so a resumed loop can count ``step`` from
    ``start_step`` up to ``len()``); iterating yields ``len() - start_step`` batches.
    Iterating twice yields the same batches.
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        epoch: int = 0,
        start_step: int = 0,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        labels: torch.Tensor | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() < 2:
            what = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
            raise DataError(f"batches: images must be a uint8 tensor N×..., got {what}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size: {batch_size!r} must be a positive integer")
        if labels is not None and len(labels) != len(images):
            raise DataError(f"batches: {len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.device = torch.device(device)
        rank, world = shard
        if not 0 <= rank < world:
            raise DataError(f"batches: shard {rank} of {world} does not exist")
        #: (rank, world) for distributed training: every process walks the same permutation
        #: and keeps its own contiguous slice of each global batch, so the shards are
        #: disjoint and together are exactly the batch one process would have trained on.
        self.shard = (rank, world)
        self.epoch = int(epoch)
        self.start_step = 0
        self.set_epoch(epoch, start_step)

    @property
    def steps_per_epoch(self) -> int:
        """Batches in a whole epoch (ignoring ``start_step``); the same as ``len()``."""
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int, start_step: int = 0) -> "Batches":
        """Switch to another epoch (and resume point) without rebuilding the object."""
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise DataError(f"start_step: {start_step!r} must be a non-negative integer")
        if start_step > self.steps_per_epoch:
            raise DataError(
                f"start_step: {start_step} is past the end of the epoch "
                f"({self.steps_per_epoch} batches of {self.batch_size})"
            )
        self.epoch = int(epoch)
        self.start_step = start_step
        return self

    def __len__(self) -> int:
        return self.steps_per_epoch

    @property
    def remaining(self) -> int:
        """Batches this iterator yields: the epoch minus the ``start_step`` skipped ones."""
        return self.steps_per_epoch - self.start_step

    def order(self) -> torch.Tensor:
        """Indices of this epoch's images, in the order they are served."""
        n = len(self.images)
        if self.shuffle:
            return epoch_permutation(n, self.seed, self.epoch)
        return torch.arange(n)

    def __iter__(self) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        if self.images.device != order.device:
            order = order.to(self.images.device)
        pin = self.device.type == "cuda" and self.images.device.type == "cpu" and torch.cuda.is_available()
        bs = self.batch_size
        for step in range(self.start_step, self.steps_per_epoch):
            idx = order[step * bs : (step + 1) * bs]
            if self.shard[1] > 1 and len(idx) >= self.shard[1]:
                # A last batch smaller than the world goes whole to every process.
                idx = idx.tensor_split(self.shard[1])[self.shard[0]]
            x = self.images.index_select(0, idx)
            if pin:
                x = x.pin_memory()
            x = x.to(self.device, non_blocking=True).float().div_(255)
            if self.labels is None:
                yield x
            else:
                y = self.labels.index_select(0, idx.to(self.labels.device))
                yield x, y.to(self.device, non_blocking=True)
