"""Mini-batches straight from an in-memory uint8 tensor, whole images or random patches.

No DataLoader, no workers, no per-item Python: each batch is one ``index_select`` on the
uint8 images, moved to the device as uint8 (4× less traffic) and scaled to float [0, 1]
there. The order of an epoch is a pure function of (seed, epoch), so a run resumed in the
middle of an epoch reproduces the remaining batches exactly without storing any state.

With ``patch`` N, each item is an N×N crop at a random place of an image of any size
(``sizes``), and an epoch draws about one image's area in patches from each image
(``max(1, round(H·W / N²))``), so an epoch still means "the data, once" in pixels.
Crop places are a pure function of (seed, epoch, step) as well.
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
        patch: int | None = None,
        sizes: torch.Tensor | None = None,
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
        self.patch = patch
        #: Which image each item of an epoch is cut from (patch mode; else item i is image i).
        self.owner: torch.Tensor | None = None
        if patch is not None:
            self.sizes = self._patch_sizes(sizes, patch)
            areas = self.sizes[:, 0] * self.sizes[:, 1]
            counts = torch.clamp(torch.round(areas.double() / patch**2).long(), min=1)
            self.owner = torch.repeat_interleave(torch.arange(len(images)), counts)
        self.epoch = int(epoch)
        self.start_step = 0
        self.set_epoch(epoch, start_step)

    def _patch_sizes(self, sizes: torch.Tensor | None, patch: int) -> torch.Tensor:
        if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
            raise DataError(f"patch: {patch!r} must be a positive integer")
        n, h, w = len(self.images), self.images.shape[-2], self.images.shape[-1]
        sizes = torch.tensor([[h, w]] * n, dtype=torch.int64).reshape(n, 2) if sizes is None else sizes.cpu().long()
        small = ((sizes[:, 0] < patch) | (sizes[:, 1] < patch)).nonzero()
        if len(small):
            i = int(small[0])
            raise DataError(f"batches: image {i} is {int(sizes[i, 0])}×{int(sizes[i, 1])} (H×W), "
                            f"smaller than the {patch}×{patch} patch")
        return sizes

    @property
    def items(self) -> int:
        """Items (images, or patches) in a whole epoch."""
        return len(self.owner) if self.owner is not None else len(self.images)

    def global_length(self, step: int) -> int:
        """How many items global batch ``step`` holds, over all processes (the last may be short)."""
        return min(self.batch_size, self.items - step * self.batch_size)

    def shard_start(self, step: int) -> int:
        """Where this process's slice of global batch ``step`` begins in that batch (0 for one process)."""
        rank, world = self.shard
        whole = self.global_length(step)
        if world == 1 or whole < world:  # a last batch smaller than the world goes whole to every process
            return 0
        return rank * (whole // world) + min(rank, whole % world)  # torch.tensor_split's slices

    @property
    def steps_per_epoch(self) -> int:
        """Batches in a whole epoch (ignoring ``start_step``); the same as ``len()``."""
        n = self.items
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
        n = self.items
        order = epoch_permutation(n, self.seed, self.epoch) if self.shuffle else torch.arange(n)
        return self.owner[order] if self.owner is not None else order

    def places(self, idx: torch.Tensor, step: int) -> torch.Tensor:
        """Top-left (y, x) of the patch of each item of a global batch, drawn for (seed, epoch, step)."""
        assert self.patch is not None
        g = torch.Generator().manual_seed((self.seed * _SEED_STRIDE + self.epoch * 7_919 + step) % 2**63)
        room = self.sizes.index_select(0, idx.cpu()) - self.patch + 1
        return (torch.rand(len(idx), 2, generator=g, dtype=torch.float64) * room).long()

    def crops(self, idx: torch.Tensor, places: torch.Tensor) -> torch.Tensor:
        """uint8 patches of images ``idx`` at top-left ``places``."""
        p = self.patch
        return torch.stack([self.images[i, :, y:y + p, x:x + p]
                            for i, (y, x) in zip(idx.tolist(), places.tolist())])

    def __iter__(self) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        if self.images.device != order.device:
            order = order.to(self.images.device)
        pin = self.device.type == "cuda" and self.images.device.type == "cpu" and torch.cuda.is_available()
        bs = self.batch_size
        for step in range(self.start_step, self.steps_per_epoch):
            idx = order[step * bs : (step + 1) * bs]
            places = self.places(idx, step) if self.patch is not None else None
            if self.shard[1] > 1 and len(idx) >= self.shard[1]:
                # A last batch smaller than the world goes whole to every process.
                idx = idx.tensor_split(self.shard[1])[self.shard[0]]
                places = places.tensor_split(self.shard[1])[self.shard[0]] if places is not None else None
            x = self.crops(idx, places) if places is not None else self.images.index_select(0, idx)
            if pin:
                x = x.pin_memory()
            x = x.to(self.device, non_blocking=True).float().div_(255)
            if self.labels is None:
                yield x
            else:
                y = self.labels.index_select(0, idx.to(self.labels.device))
                yield x, y.to(self.device, non_blocking=True)
