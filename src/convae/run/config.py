"""Typed run configs: everything needed to rebuild a run's model and repeat its training.

``TrainConfig`` describes an autoencoder run (reconstruct, denoise, colorize) and
``ClassifyConfig`` a classifier run. Both are stored in ``config.json`` under
``"training"`` and come back through :func:`config_from_dict`; ``resolved()`` fills in
the preset's reference defaults and checks every value with a one-line error.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from convae.core.device import check_device_name
from convae.core.errors import ConvaeError
from convae.data import dataset_names, default_dataset
from convae.data.corrupt import Corruption, parse_corruption
from convae.data.mvtec import GOOD, is_mvtec
from convae.models import get_preset, resolve_params
from convae.models.classifier import get_classifier
from convae.models.heads import canonical_color_output

LOSSES = ("mse", "bce", "l1")
TASKS = ("reconstruct", "denoise", "colorize")
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("none", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16")
CLASSIFY_OPTIMIZERS = ("sgd", "adam", "adamw")
AUGMENTS = ("none", "shift")
#: The smallest --patch: below it no preset has room to downsample.
MIN_PATCH = 8
T = TypeVar("T")
#: How a run is carried out, not what it computes: these may change when a run is resumed
#: (epochs extends it; data_dir says where the same data is now).
RUNTIME = frozenset({"epochs", "device", "threads", "checkpoint_every", "compile", "logger", "data_dir"})


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from its config.json form.

    Keys the dataclass does not know (written by another convae version) are ignored, and
    ``image_size``, a list in JSON, becomes the tuple the config holds.
    """
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k in known}
    if values.get("image_size"):
        values["image_size"] = tuple(values["image_size"])
    return cls(**values)


def check(condition: bool, message: str) -> None:
    """Raise a one-line ConvaeError unless ``condition`` holds."""
    if not condition:
        raise ConvaeError(message)


def absolute_data(dataset: str, data_dir: str | None) -> tuple[str, str | None]:
    """A run stores where its data is as absolute paths, so every verb finds it from any folder."""
    for prefix in ("folder:", "mvtec:"):
        if dataset.startswith(prefix):
            dataset = prefix + str(Path(dataset[len(prefix):]).expanduser().resolve())
    return dataset, (str(Path(data_dir).expanduser().resolve()) if data_dir else data_dir)


def inspection_dataset(dataset: str) -> bool:
    """``mvtec:PATH``, or a ``folder:PATH`` in that layout (train/good, test/, ground_truth/)."""
    return dataset.startswith("mvtec:") or (dataset.startswith("folder:") and is_mvtec(dataset[len("folder:"):]))


LOGGERS = ("tensorboard", "csv")


def parse_loggers(spec: str) -> tuple[str, ...]:
    """``tensorboard,csv`` (the default), one of them, or ``none``."""
    names = tuple(part.strip() for part in str(spec).split(",") if part.strip())
    if names == ("none",):
        return ()
    unknown = [name for name in names if name not in LOGGERS]
    if unknown or not names:
        raise ConvaeError(f"--logger must be tensorboard, csv, both (tensorboard,csv) or none, got {spec!r}")
    return names


class StoredConfig:
    """How both configs go to and come back from config.json (lists for tuples)."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
            elif isinstance(value, dict):
                data[key] = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
        return data

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        return config_from_dict(cls, data)

    @classmethod
    def from_stored(cls: type[T], config: dict[str, Any]) -> T:
        """The training settings of a whole config.json."""
        return config_from_dict(cls, config.get("training", {}))

    def conflicts(self, given: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        """(setting, this run's value, the given value) for each given setting that would change the run.

        Both sides are resolved the same way (preset defaults, absolute paths, canonical
        specs), so ``--dataset folder:tiles`` from the training folder matches the stored path.
        Settings of how a run is carried out, not what it computes (RUNTIME), never conflict.
        """
        known = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        given = {k: v for k, v in given.items() if k in known and k not in RUNTIME}
        base = self.resolved()  # type: ignore[attr-defined]
        candidate = dataclasses.replace(self, **given).resolved()  # type: ignore[type-var, attr-defined]
        return [(key, getattr(base, key), getattr(candidate, key)) for key in given
                if getattr(base, key) != getattr(candidate, key)]


@dataclass
class TrainConfig(StoredConfig):
    """Everything needed to rebuild the model and repeat the run.

    Fields left as None take the model preset's reference defaults in ``resolved()``.
    """

    dataset: str | None = None
    data_dir: str | None = None
    channels: int | None = None
    image_size: tuple[int, int] | None = None
    model: str = "conv"
    model_args: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    loss: str | None = None
    optimizer: str = "adam"
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    checkpoint_every: int = 0
    threads: int | None = None
    task: str = "reconstruct"
    noise: str | None = None
    normal_classes: list[int | str] | None = None  # indices or class names; config.json keeps indices
    val_fraction: float | None = None
    #: colorize only: "chroma[:SIGMA[:GAIN]]" (default chroma:4:0.6: the gray input's luma + a
    #: smoothed predicted colour, shrunk by GAIN at inference, see convae.models.heads) or "rgb".
    color_output: str | None = None
    #: "none" (constant --lr), "cosine" (lr down to 0) or "onecycle" (warm up, then anneal);
    #: the rate is a pure function of the step, so resume needs no scheduler state.
    lr_schedule: str = "none"
    #: "fp32", or "bf16" autocast for the forward pass (a win on GPUs; see docs/performance.md).
    precision: str = "fp32"
    #: torch.compile the model for training (costs compile time up front).
    compile: bool = False
    #: "tensorboard,csv" (RUN/tb/ and metrics.csv while training), one of them, or "none".
    logger: str = "tensorboard,csv"
    #: Train on random N×N crops of images of any size; the model takes N×N and whole
    #: images go through it in overlapping tiles (convae.applications.tiles).
    patch: int | None = None

    @classmethod
    def from_stored(cls, config: dict[str, Any]) -> "TrainConfig":
        saved = config_from_dict(cls, config.get("training", {}))
        if saved.task == "colorize" and saved.color_output is None:  # a run from before the chroma head
            saved.color_output = config.get("model", {}).get("color_output") or "rgb"
        return saved

    def resolved(self, named_dataset: bool = True) -> "TrainConfig":
        """A copy with preset defaults filled in and every value checked.

        ``named_dataset=False`` is for data handed in as ImageSets, whose name need not be
        one convae can load.
        """
        preset = get_preset(self.model)
        config = dataclasses.replace(self, model_args=resolve_params(self.model, self.model_args))
        for key in ("epochs", "batch_size", "lr", "loss"):
            if getattr(config, key) is None:
                setattr(config, key, preset.training[key])
        if config.dataset is None:
            config.dataset = default_dataset(config.data_dir)
        config.dataset, config.data_dir = absolute_data(config.dataset, config.data_dir)
        known = dataset_names()
        check(not named_dataset or config.dataset in known or config.dataset.startswith(("folder:", "mvtec:")),
               f"--dataset {config.dataset!r} is unknown; choose one of {', '.join(known)}, folder:PATH or mvtec:PATH")
        if config.normal_classes is None and inspection_dataset(config.dataset):
            config.normal_classes = [GOOD]  # an inspection dataset trains on its good parts only
        check(config.loss in LOSSES, f"--loss must be one of {', '.join(LOSSES)}, got {config.loss!r}")
        check(config.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        check(config.lr_schedule in LR_SCHEDULES,
               f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {config.lr_schedule!r}")
        check(config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}")
        check(config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}")
        check(config.lr > 0 and math.isfinite(config.lr), f"--lr must be a positive number, got {config.lr}")
        check(config.patch is None or (not isinstance(config.patch, bool) and isinstance(config.patch, int)
                                       and config.patch >= MIN_PATCH),
              f"--patch must be an integer of at least {MIN_PATCH} pixels, got {config.patch!r}")
        check(config.task in TASKS, f"--task must be one of {', '.join(TASKS)}, got {config.task!r}")
        check(config.noise is None or config.task != "reconstruct",
              f"--noise {config.noise} has no effect on a reconstruction run; add --task denoise to train a denoiser")
        if config.task == "denoise" and config.noise is None:
            config.noise = "gaussian:0.5"
        if config.task == "colorize":
            check(config.noise in (None, "gray"), "--task colorize takes no --noise (its input is the gray image)")
            config.noise = "gray"
            try:
                config.color_output = canonical_color_output(config.color_output or "chroma")
            except ConvaeError as error:
                raise ConvaeError(f"--color-output: {error}") from None
        else:
            check(config.color_output is None, f"--color-output is for --task colorize, not {config.task}")
        if config.noise is not None:
            config.noise = str(parse_corruption(config.noise))
        if config.val_fraction is None:
            # Anomaly thresholds are fitted on held-out normal images, so keep some by default.
            config.val_fraction = 0.1 if config.normal_classes is not None else 0.0
        check(0.0 <= config.val_fraction < 1.0, f"--val-fraction must be in [0, 1), got {config.val_fraction}")
        check(config.checkpoint_every >= 0, "--checkpoint-every must be 0 (per epoch) or a step count")
        check(config.precision in PRECISIONS,
              f"--precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
        check_device_name(config.device)
        parse_loggers(config.logger)
        if config.loss == "bce" and config.model_args.get("out_activation") == "none":
            raise ConvaeError(
                f"--loss bce needs outputs in [0,1]; use --model-arg out_activation=sigmoid with {config.model}"
            )
        return config


    def corruption(self) -> Corruption | None:
        """What the model sees instead of the clean image (None: the clean image)."""
        return parse_corruption(self.noise) if self.noise else None

    def model_shapes(self, data_shape: tuple[int, int, int]) -> tuple[tuple[int, int, int], int]:
        """(input shape, output channels): colorization maps 1 channel to the data's 3; a
        patch run's model takes one patch."""
        if self.patch:
            data_shape = (data_shape[0], self.patch, self.patch)
        if self.task == "colorize":
            if data_shape[0] != 3:
                raise ConvaeError(f"--task colorize needs colour images, the dataset has {data_shape[0]} channel(s)")
            return (1, data_shape[1], data_shape[2]), 3
        return data_shape, data_shape[0]



@dataclass
class ClassifyConfig(StoredConfig):
    """Everything needed to rebuild a classifier and repeat its training run.

    Fields left as None take the classifier preset's defaults in :meth:`resolved`
    (for ``cnn`` those are the reference settings: SGD lr 0.01, batch 256).
    """

    dataset: str | None = None  # None: "mnist", or the name of the ImageSet passed to train_classifier
    data_dir: str | None = None
    channels: int | None = None
    image_size: tuple[int, int] | None = None
    model: str = "cnn"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    augment: str | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    threads: int | None = None
    limit: int | None = None  # train (and validate) on the first N training images only
    checkpoint_every: int = 0
    precision: str = "fp32"
    compile: bool = False
    logger: str = "tensorboard,csv"

    def resolved(self, named_dataset: bool = True) -> "ClassifyConfig":
        """A copy with the preset's defaults filled in and every value checked (one-line errors)."""
        preset = get_classifier(self.model)
        config = dataclasses.replace(self, dataset=self.dataset or "mnist")
        config.dataset, config.data_dir = absolute_data(config.dataset, config.data_dir)
        for key in ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule", "augment"):
            if getattr(config, key) is None:
                setattr(config, key, preset.training[key])
        check(config.optimizer in CLASSIFY_OPTIMIZERS,
              f"--optimizer must be one of {', '.join(CLASSIFY_OPTIMIZERS)}, got {config.optimizer!r}")
        check(config.schedule in LR_SCHEDULES, f"--schedule must be one of {', '.join(LR_SCHEDULES)}, got {config.schedule!r}")
        check(config.augment in AUGMENTS, f"--augment must be one of {', '.join(AUGMENTS)}, got {config.augment!r}")
        check(config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}")
        check(config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}")
        check(config.lr > 0 and math.isfinite(config.lr), f"--lr must be a positive number, got {config.lr}")
        check(0 <= config.momentum < 1, f"--momentum must be in [0, 1), got {config.momentum}")
        check(config.weight_decay >= 0, f"--weight-decay must be non-negative, got {config.weight_decay}")
        check(0 <= config.val_fraction < 1, f"--val-fraction must be in [0, 1), got {config.val_fraction}")
        check(config.limit is None or config.limit >= 2, f"--limit must be at least 2 images, got {config.limit}")
        check_device_name(config.device)
        check(config.threads is None or config.threads >= 1, f"--threads must be at least 1, got {config.threads}")
        check(config.checkpoint_every >= 0, "--checkpoint-every must be 0 (per epoch) or a step count")
        check(config.precision in PRECISIONS,
              f"--precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
        parse_loggers(config.logger)
        return config


