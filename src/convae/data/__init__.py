"""Datasets as uint8 tensors in memory, and fast float batches from them.

``load_dataset("mnist")`` / ``load_splits(...)`` give :class:`ImageSet` objects;
:class:`Batches` turns their images into shuffled float32 batches in [0, 1].
"""

from convae.core.decode import DataWarning
from convae.data.batches import Batches
from convae.data.folder import load_folder
from convae.data.imageset import ImageSet
from convae.data.sources import (
    dataset_names,
    default_dataset,
    load_dataset,
    load_splits,
)

__all__ = [
    "Batches",
    "DataWarning",
    "ImageSet",
    "dataset_names",
    "default_dataset",
    "load_dataset",
    "load_folder",
    "load_splits",
]
