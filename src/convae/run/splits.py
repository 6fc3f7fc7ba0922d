"""A run's data splits, made in this one place: train, validation, test and held-out anomalies.

Every split is a pure function of the run's config (dataset, classes, fractions, seeds),
so the trainer and every application that needs "the images this run never trained on"
get exactly the same images. Data is loaded lazily: evaluating on the test split never
decodes the training split.
"""

from __future__ import annotations

from functools import cached_property
from typing import Sequence

import torch

from convae.core.errors import ConvaeError, DataError
from convae.data import ImageSet, load_dataset
from convae.data.patches import patch_set
from convae.run.config import ClassifyConfig, TrainConfig
from convae.run.progress import decode_bar

#: Offsets on the run's seed for the two seeded cuts, kept from the first releases so
#: runs trained then still recover their own validation images.
VALIDATION_SEED_OFFSET = 7919
ANOMALY_SEED_OFFSET = 104729


def split_validation(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """Hold out a seeded ``fraction`` of an autoencoder's training images as validation."""
    count = int(round(len(train) * fraction))
    if fraction <= 0 or count == 0:
        return train, None
    if count >= len(train):
        raise ConvaeError(f"--val-fraction {fraction} leaves no training images out of {len(train)}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + VALIDATION_SEED_OFFSET))
    val = train.subset(order[:count].sort().values)
    val.split = "val"
    return train.subset(order[count:].sort().values), val


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices) as the classifier reference cuts them.

    The first (1 - val_fraction)·n of ``randperm(n)`` seeded with ``seed`` train, the rest
    validate: the same cut as ``torch.utils.data.random_split``.
    """
    n_val = int(n * val_fraction)
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return permutation[: n - n_val], permutation[n - n_val :]


def require_labels(data: ImageSet) -> None:
    """Classifiers and class-based anomaly evaluation need labelled images."""
    if len(data) == 0:
        raise DataError(f"{data.name}/{data.split}: no images")
    if not data.classes or bool((data.labels < 0).any()):
        raise DataError(
            f"{data.name}/{data.split}: images without class labels; classification needs labelled data "
            f"(for a folder dataset, one sub-folder per class)"
        )


def class_indices(wanted: list[int | str], classes: list[str], dataset: str) -> list[int]:
    """Class indices from indices or class names (as --normal-classes takes them), or one clear error."""
    listing = _listing(classes, range(len(classes))) or "none (the data has no classes)"
    indices = []
    for item in wanted:
        if isinstance(item, str) and item in classes:
            indices.append(classes.index(item))
        elif isinstance(item, int) or str(item).isdigit():
            index = int(item)
            if not 0 <= index < len(classes):
                raise ConvaeError(f"--normal-classes {index} is not a class of {dataset} (its classes: {listing})")
            indices.append(index)
        else:
            raise ConvaeError(f"--normal-classes {item!r} is not a class of {dataset} (its classes: {listing})")
    return sorted(set(indices))


def class_listing(classes: list[str], chosen: list[int] | None = None) -> str:
    """``classes: 0 airplane, 1 automobile, …; normal: 0 airplane`` for messages."""
    text = "classes: " + _listing(classes, range(len(classes)))
    if chosen is not None:
        text += "; normal: " + _listing(classes, chosen)
    return text


def _listing(classes: list[str], indices: Sequence[int]) -> str:
    return ", ".join(classes[i] if classes[i] == str(i) else f"{i} {classes[i]}" for i in indices)


class Splits:
    """The splits of one run, loaded on first use.

    ``train_all`` is the dataset's training split as the run saw it; ``train`` the images
    the model learnt from; ``val`` the held-out validation images (or None); ``test`` the
    test split; ``anomalies`` (autoencoders trained on some classes) a seeded share of the
    training split's other classes, never trained on.
    """

    def __init__(
        self,
        config: TrainConfig | ClassifyConfig,
        *,
        train_set: ImageSet | None = None,
        test_set: ImageSet | None = None,
    ) -> None:
        self.config = config
        self._given_train, self._given_test = train_set, test_set
        self._patch_sets: dict[tuple[str, int, int], ImageSet] = {}

    def _load(self, split: str) -> ImageSet:
        cfg = self.config
        return load_dataset(cfg.dataset, split, data_dir=cfg.data_dir, channels=cfg.channels,
                            image_size=cfg.image_size, any_size=cfg.tiling.tiled,
                            progress=decode_bar)

    @property
    def is_classifier(self) -> bool:
        return isinstance(self.config, ClassifyConfig)

    @cached_property
    def loaded_train(self) -> ImageSet:
        """The dataset's whole training split."""
        data = self._given_train if self._given_train is not None else self._load("train")
        if self.is_classifier:
            require_labels(data)
        return data

    @cached_property
    def train_all(self) -> ImageSet:
        """The training split as the run saw it (a classifier's ``--limit`` applied)."""
        data, limit = self.loaded_train, getattr(self.config, "limit", None)
        return data.subset(torch.arange(limit)) if limit is not None and limit < len(data) else data

    @cached_property
    def test(self) -> ImageSet:
        if self._given_test is not None:
            data = self._given_test
        elif self._given_train is not None:
            if self.is_classifier:
                raise ConvaeError("train_classifier: pass test_set together with train_set")
            data = self._given_train  # Python use with one ImageSet: score on what was given
        else:
            data = self._load("test")
        if self.is_classifier:
            require_labels(data)
        return data

    @cached_property
    def _parts(self) -> tuple[ImageSet, ImageSet | None]:
        cfg = self.config
        if isinstance(cfg, ClassifyConfig):
            train_idx, val_idx = split_train_val(len(self.train_all), cfg.val_fraction, cfg.split_seed)
            return self.train_all.subset(train_idx), (self.train_all.subset(val_idx) if len(val_idx) else None)
        return split_validation(self.normal, cfg.val_fraction or 0.0, cfg.seed)

    @cached_property
    def normal(self) -> ImageSet:
        """The training images of the run's normal classes (all of them without --normal-classes)."""
        indices = self.normal_indices()
        return self.train_all if indices is None else self.train_all.select_classes(indices)

    def normal_indices(self) -> list[int] | None:
        """The run's normal classes as indices (they may be given as names), or None for all."""
        wanted = getattr(self.config, "normal_classes", None)
        if wanted is None:
            return None
        return class_indices(list(wanted), list(self.train_all.classes), self.train_all.name)

    @property
    def train(self) -> ImageSet:
        return self._parts[0]

    @property
    def val(self) -> ImageSet | None:
        return self._parts[1]

    @cached_property
    def anomalies(self) -> ImageSet:
        cfg = self.config
        classes = self.normal_indices()
        if classes is None:
            raise ConvaeError("the run was trained on every class, so it has no held-out anomalies")
        train = self.train_all
        others = train.subset(~torch.isin(train.labels, torch.tensor(classes, dtype=torch.int64)))
        count = int(round(len(others) * (cfg.val_fraction or 0.0)))
        generator = torch.Generator().manual_seed(cfg.seed + ANOMALY_SEED_OFFSET)
        order = torch.randperm(len(others), generator=generator)[:count]
        return others.subset(order.sort().values)

    def held_out(self, fallback: float = 0.1) -> tuple[ImageSet, bool]:
        """The run's validation images, or (a run without them) a seeded ``fallback`` share of
        its normal training images; the flag says which. Too few images to hold any out: all."""
        if self.val is not None:
            return self.val, True
        _, val = split_validation(self.normal, fallback, self.config.seed)
        return (val if val is not None else self.normal), False

    def measured(self, data: ImageSet) -> ImageSet:
        """What a loss or a figure is measured on: ``data`` itself, or for a patch run (whose
        model takes one patch) the same fixed patches of it every time (convae.data.patches)."""
        patch = self.config.tiling.patch
        if not patch:
            return data
        key = (data.split, len(data), id(data))
        if key not in self._patch_sets:
            self._patch_sets[key] = patch_set(data, patch, self.config.seed)
        return self._patch_sets[key]

    def split(self, name: str) -> ImageSet:
        """A named split: ``train`` (the dataset's whole training split) or ``test``."""
        if name not in ("train", "test"):
            raise ConvaeError(f"--split must be train or test, got {name!r}")
        return self.loaded_train if name == "train" else self.test
