"""How whole images meet a run's model: as they are, or in patch × patch tiles.

A run trained with ``--patch N`` has a model that takes N×N crops; every verb then sends
whole images of any size through it in overlapping tiles (convae.applications.tiles), and
measures losses and figures on one fixed set of patches per split (convae.data.patches).
Every place that cares asks this one object instead of reading the raw setting.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tiling:
    patch: int | None = None

    @property
    def tiled(self) -> bool:
        """True for a patch run: images keep their own sizes and go through the model in tiles."""
        return bool(self.patch)

    @property
    def tile(self) -> tuple[int, int] | None:
        """The tile (H, W) whole images are cut into, or None when they go through whole."""
        return (self.patch, self.patch) if self.patch else None

    def model_shape(self, data_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """What the model takes for data of ``data_shape`` (C, H, W): one tile, or the image."""
        return (data_shape[0], self.patch, self.patch) if self.patch else data_shape

    def measured_on(self, count: int, images: int) -> str:
        """What a split's numbers were measured on, counting patches and images apart."""
        if not self.patch:
            return f"{count} image{'s' if count != 1 else ''}"
        return (f"{count} fixed {self.patch}×{self.patch} patch{'es' if count != 1 else ''} "
                f"of {images} image{'s' if images != 1 else ''}")
