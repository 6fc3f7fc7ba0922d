"""The in-memory dataset every loader returns.

Images stay uint8 (N×C×H×W) so a whole dataset costs one byte per pixel; batches are
converted to float on the fly (see :mod:`convae.data.batches`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from convae.core.errors import DataError
from convae.data.memmap_cache import mapped_subset


@dataclass
class ImageSet:
    """A split of a dataset: uint8 images, int64 labels (-1 when unknown) and class names."""

    images: torch.Tensor  # uint8 N×C×H×W, contiguous
    labels: torch.Tensor  # int64 N, -1 when unknown
    classes: list[str]
    split: str
    name: str
    ids: list[str] | None = None  # file paths relative to the folder root (folder data)
    #: int64 N×2 (H, W) of each image when they differ: image i fills the top-left
    #: ``sizes[i]`` of the N×C×H×W canvas and the rest is zero (patch training, see
    #: :class:`convae.data.batches.Batches`). None: every image fills the canvas.
    sizes: torch.Tensor | None = None
    #: uint8 N×H×W defect masks (1 = defect) of an inspection test split (convae.data.mvtec).
    masks: torch.Tensor | None = None
    #: The memory-mapped cache file ``images`` is read from (a folder larger than the memory
    #: budget, convae.data.memmap_cache); subsets are then written to mapped files too.
    backing: str | None = None

    def __post_init__(self) -> None:
        # Validate once here so every consumer can trust the layout without re-checking.
        where = f"{self.name}/{self.split}"
        if not isinstance(self.images, torch.Tensor):
            raise DataError(f"{where}: images must be a torch.Tensor, got {type(self.images).__name__}")
        if self.images.dtype != torch.uint8:
            raise DataError(f"{where}: images must be uint8, got {self.images.dtype}")
        if self.images.dim() != 4:
            raise DataError(
                f"{where}: images must be 4-D N×C×H×W, got shape {tuple(self.images.shape)}"
            )
        if not isinstance(self.labels, torch.Tensor):
            self.labels = torch.as_tensor(self.labels)
        if self.labels.dim() != 1:
            raise DataError(f"{where}: labels must be 1-D, got shape {tuple(self.labels.shape)}")
        if self.labels.dtype != torch.int64:
            self.labels = self.labels.to(torch.int64)
        if len(self.labels) != len(self.images):
            raise DataError(
                f"{where}: {len(self.images)} images but {len(self.labels)} labels"
            )
        if self.ids is not None and len(self.ids) != len(self.images):
            raise DataError(f"{where}: {len(self.images)} images but {len(self.ids)} ids")
        if self.sizes is not None:
            self.sizes = torch.as_tensor(self.sizes, dtype=torch.int64)
            if self.sizes.shape != (len(self.images), 2):
                raise DataError(f"{where}: sizes must be N×2 for {len(self.images)} images, "
                                f"got shape {tuple(self.sizes.shape)}")
        if self.masks is not None and tuple(self.masks.shape) != (len(self.images), *self.images.shape[2:]):
            raise DataError(f"{where}: masks of shape {tuple(self.masks.shape)} for images of shape "
                            f"{tuple(self.images.shape)}")
        if len(self.labels) and self.classes:
            bad = (self.labels < -1) | (self.labels >= len(self.classes))
            if bool(bad.any()):
                value = int(self.labels[bad][0])
                raise DataError(
                    f"{where}: label {value} out of range for {len(self.classes)} classes"
                )
        self.classes = list(self.classes)
        if not self.images.is_contiguous():
            self.images = self.images.contiguous()

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image: what a model's input layer must accept."""
        _, c, h, w = self.images.shape
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        c, h, w = self.shape
        return (
            f"ImageSet(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape=({c}, {h}, {w}), classes={len(self.classes)})"
        )

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "ImageSet":
        """A new ImageSet with only the given rows (e.g. a validation hold-out)."""
        idx = torch.as_tensor(indices)
        if idx.dtype == torch.bool:  # a mask, e.g. s.subset(s.labels == 3)
            if idx.shape != (len(self),):
                raise DataError(f"{self.name}/{self.split}: mask of shape {tuple(idx.shape)} for {len(self)} images")
            idx = idx.nonzero()
        idx = idx.to(torch.int64).reshape(-1)
        n = len(self)
        if len(idx) and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise DataError(f"{self.name}/{self.split}: subset index out of range for {n} images")
        idx = idx % n if n else idx
        ids = [self.ids[i] for i in idx.tolist()] if self.ids is not None else None
        backing = None
        if self.backing is not None:  # larger than memory: the subset goes to a mapped file of its own
            images, path = mapped_subset(Path(self.backing), self.images, idx)
            backing = str(path)
        else:
            images = self.images.index_select(0, idx).contiguous()
        return ImageSet(
            images=images,
            labels=self.labels.index_select(0, idx),
            classes=list(self.classes),
            split=self.split,
            name=self.name,
            ids=ids,
            sizes=self.sizes.index_select(0, idx) if self.sizes is not None else None,
            masks=self.masks.index_select(0, idx) if self.masks is not None else None,
            backing=backing,
        )

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of image ``index`` without its canvas padding."""
        if self.sizes is None:
            return (int(self.images.shape[2]), int(self.images.shape[3]))
        h, w = self.sizes[index].tolist()
        return (int(h), int(w))

    def select_classes(self, class_indices: Sequence[int]) -> "ImageSet":
        """Keep only images whose label is in ``class_indices`` (labels keep their meaning).

        Used e.g. to train an anomaly detector on the "normal" classes only.
        """
        wanted = [int(c) for c in class_indices]
        for c in wanted:
            if not 0 <= c < len(self.classes):
                raise DataError(
                    f"{self.name}/{self.split}: class index {c} out of range "
                    f"(0..{len(self.classes) - 1})"
                )
        mask = torch.isin(self.labels, torch.tensor(wanted, dtype=torch.int64))
        return self.subset(mask.nonzero().reshape(-1))
