"""Typed run configs: everything needed to rebuild a run's model and repeat its training.

``RunSettings`` holds what every run shares and checks every value once (types and ranges
through convae.run.fields, naming the flag, file or stored run each came from);
``TrainConfig`` adds what an autoencoder run needs (reconstruct, denoise, colorize) and
``ClassifyConfig`` what a classifier run needs. Both are stored in ``config.json`` under
``"training"`` and come back through :func:`config_from_dict`; ``resolved()`` fills in the
preset's reference defaults, then checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from convae.core.device import check_device_name
from convae.core.errors import ConvaeError
from convae.data import dataset_names, default_dataset
from convae.data.corrupt import Corruption, parse_corruption
from convae.data.mvtec import GOOD
from convae.models import default_model, get_preset, resolve_params
from convae.models.classifier import get_classifier
from convae.models.codec import CODEC_PRESETS
from convae.models.heads import canonical_color_output
from convae.models.restoration import UNBOUNDED_OUTPUT
from convae.run.fields import Field, Sources, check_fields
from convae.run.inspect_settings import check_inspect, inspection_dataset, needs_inspect_checks
from convae.run.tiling import Tiling

LOSSES = ("mse", "bce", "l1")
#: CompressAI's λ ladder for its bmshj2018 models (qualities 1-8), for --loss rd:LAMBDA.
RD_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)
TASKS = ("reconstruct", "denoise", "colorize", "inspect")
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("none", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16", "auto")
CLASSIFY_OPTIMIZERS = ("sgd", "adam", "adamw")
AUGMENTS = ("none", "shift")
#: The smallest --patch: below it no preset has room to downsample.
MIN_PATCH = 8
T = TypeVar("T")
#: How a run is carried out, not what it computes: these may change when a run is resumed
#: (epochs extends it; data_dir says where the same data is now).
RUNTIME = frozenset({"epochs", "device", "threads", "checkpoint_every", "compile", "logger", "data_dir", "max_time"})


#: Names older runs stored, and the field each is now.
RENAMED = {"schedule": "lr_schedule"}


def config_from_dict(cls: type[T], data: dict[str, Any], origin: str | None = None) -> T:
    """Rebuild a config dataclass from its config.json form.

    Keys the dataclass does not know (written by another convae version) are ignored, and
    ``image_size``, a list in JSON, becomes the tuple the config holds. ``origin`` is the
    config.json the values came from, so a bad one is reported as its ``training.KEY``.
    """
    known = {f.name for f in dataclasses.fields(cls)} - {"sources"}  # type: ignore[arg-type]
    data = {RENAMED.get(k, k): v for k, v in data.items()}
    values = {k: v for k, v in data.items() if k in known}
    if isinstance(values.get("image_size"), list):
        values["image_size"] = tuple(values["image_size"])
    sources = Sources()
    if origin:
        sources.mark(values, origin, within="training.")
    return cls(**values, sources=sources)


def rd_lambda(loss: str | None, where: str = "--loss") -> float | None:
    """λ of a rate–distortion loss ``rd:LAMBDA`` (λ·255²·MSE + bits per pixel), None for other losses;
    ``where`` names the flag or file a bad one came from."""
    if not isinstance(loss, str) or not loss.startswith("rd:"):
        return None
    try:
        value = float(loss[3:])
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConvaeError(f"{where} {loss}: LAMBDA must be a positive number, e.g. rd:0.013 (CompressAI's ladder: "
                          f"{', '.join(f'{v:g}' for v in RD_LAMBDAS)})")
    return value


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


#: What every run's settings may hold (the kinds of run add their own below).
BASE_FIELDS = {
    "dataset": Field("str"), "data_dir": Field("str"), "channels": Field("int", choices=(1, 3)),
    "image_size": Field("size"), "model": Field("str"), "epochs": Field("int", low=1),
    "batch_size": Field("int", low=1), "lr": Field("float", low=0, low_open=True), "optimizer": Field("str"),
    "lr_schedule": Field("str", choices=LR_SCHEDULES), "seed": Field("int"), "deterministic": Field("bool"),
    "device": Field("str"), "threads": Field("int", low=1), "checkpoint_every": Field("int", low=0),
    "precision": Field("str", choices=PRECISIONS), "compile": Field("bool"), "logger": Field("str"),
    "val_fraction": Field("float", low=0, high=1, high_open=True), "max_time": Field("duration"),
}


@dataclass
class RunSettings:
    """The settings every kind of run shares, and the one place each value is checked.

    A kind of run (TrainConfig, ClassifyConfig) adds its own fields and FIELDS, its preset's
    defaults and the checks that need several fields at once (``_resolve_kind``). ``sources``
    says where each value came from, so an error names the flag, file or stored run to fix.
    """

    dataset: str | None = None
    data_dir: str | None = None
    channels: int | None = None
    image_size: tuple[int, int] | None = None
    model: str = ""
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    #: "none" (constant --lr), "cosine" (lr down to 0) or "onecycle" (warm up, then anneal), None the
    #: preset's; the rate is a pure function of the step, so resume needs no scheduler state.
    lr_schedule: str | None = None
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    threads: int | None = None
    checkpoint_every: int = 0
    #: "fp32", "bf16" (autocast) or "auto" (bf16 where the device has bf16 units; config.json keeps the pick).
    precision: str = "fp32"
    #: torch.compile the model for training (costs compile time up front).
    compile: bool = False
    #: "tensorboard,csv" (RUN/tb/ and metrics.csv while training), one of them, or "none".
    logger: str = "tensorboard,csv"
    val_fraction: float | None = None
    #: Stop cleanly at the first step after this many seconds of training, counted over every
    #: resume (checkpoint and evaluation as for a finished run; convae.training.time_limit).
    max_time: float | None = None
    sources: Sources = field(default_factory=Sources, compare=False, repr=False)

    FIELDS: ClassVar[dict[str, Field]] = BASE_FIELDS
    #: Defaults the model preset gives when a field is left as None.
    PRESET_DEFAULTS: ClassVar[tuple[str, ...]] = ("epochs", "batch_size", "lr")

    # -- config.json ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The stored form: lists for tuples, no ``sources``."""
        data = dataclasses.asdict(dataclasses.replace(self, sources=Sources()))
        data.pop("sources", None)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
            elif isinstance(value, dict):
                data[key] = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
        return data

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any], origin: str | None = None) -> T:
        """From the stored form; ``origin`` (the config.json it came from) names it in errors."""
        return config_from_dict(cls, data, origin)

    @classmethod
    def from_stored(cls: type[T], config: dict[str, Any], origin: str | None = None) -> T:
        """The training settings of a whole config.json."""
        return config_from_dict(cls, config.get("training", {}), origin)

    # -- checking ---------------------------------------------------------------------------
    def resolved(self: T, named_dataset: bool = True) -> T:
        """A copy with the preset's defaults filled in and every value checked (one-line errors).

        ``named_dataset=False`` is for data handed in as ImageSets, whose name need not be one
        convae can load.
        """
        config = dataclasses.replace(self)  # type: ignore[type-var]
        config.check_types()  # type: ignore[attr-defined]
        config._fill_defaults()  # type: ignore[attr-defined]
        config.dataset, config.data_dir = absolute_data(config.dataset, config.data_dir)  # type: ignore[attr-defined]
        config._resolve_kind(named_dataset)  # type: ignore[attr-defined]
        check_device_name(config.device)  # type: ignore[attr-defined]
        parse_loggers(config.logger)  # type: ignore[attr-defined]
        return config

    def check_types(self) -> None:
        """Every set value against its field, normalised in place (a size "28" becomes (28, 28))."""
        for key, value in check_fields(self._values(), self.FIELDS, self.sources).items():
            setattr(self, key, value)

    def _values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sources"}

    def _fill_defaults(self) -> None:
        raise NotImplementedError

    def _resolve_kind(self, named_dataset: bool) -> None:
        raise NotImplementedError

    def where(self, key: str) -> str:
        return self.sources.where(key)

    def conflicts(self, given: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        """(setting, this run's value, the given value) for each given setting that would change the run.

        Both sides are resolved the same way (preset defaults, absolute paths, canonical specs), so
        ``--dataset folder:tiles`` from the training folder matches the stored path. Settings of how a run
        is carried out (RUNTIME) never conflict, nor does ``--precision auto`` (config.json keeps its pick).
        """
        known = {f.name for f in dataclasses.fields(self)}
        given = {k: v for k, v in given.items() if k in known and k not in RUNTIME and (k, v) != ("precision", "auto")}
        base = self.resolved()
        candidate = dataclasses.replace(self, **given).resolved()
        return [(key, getattr(base, key), getattr(candidate, key)) for key in given
                if getattr(base, key) != getattr(candidate, key)]


TRAIN_FIELDS = {
    **BASE_FIELDS, "model_args": Field("table"), "loss": Field("str"),
    "optimizer": Field("str", choices=OPTIMIZERS), "task": Field("str", choices=TASKS), "noise": Field("str"),
    "normal_classes": Field("classes"), "color_output": Field("str"), "patch": Field("int", low=MIN_PATCH),
    "anomaly_source": Field("str"), "crop": Field("int", low=0),
}


@dataclass
class TrainConfig(RunSettings):
    """Everything needed to rebuild an autoencoder and repeat its run (reconstruct, denoise, colorize, inspect).
    Fields left as None take the task's preset and its reference defaults in ``resolved()``."""

    model: str | None = None  # None: the task's default (convae.models.DEFAULT_MODELS)
    model_args: dict[str, Any] = field(default_factory=dict)
    loss: str | None = None
    optimizer: str | None = "adam"
    task: str = "reconstruct"
    noise: str | None = None
    normal_classes: list[int | str] | None = None  # indices or class names; config.json keeps indices
    #: colorize only: "chroma[:SIGMA[:GAIN]]" (default chroma:4:0.6: the gray input's luma + a
    #: smoothed predicted colour, shrunk by GAIN at inference, see convae.models.heads) or "rgb".
    color_output: str | None = None
    #: Train on random N×N crops of images of any size; the model takes N×N and whole
    #: images go through it in overlapping tiles (see ``tiling``).
    patch: int | None = None
    #: inspect only: a folder of images to fill simulated defects from (None: the parts themselves).
    anomaly_source: str | None = None
    #: inspect only: train on random N×N crops of the parts (0: whole; None: the preset's); detect sees whole parts.
    crop: int | None = None

    FIELDS: ClassVar[dict[str, Field]] = TRAIN_FIELDS
    PRESET_DEFAULTS: ClassVar[tuple[str, ...]] = ("epochs", "batch_size", "lr", "loss")

    @classmethod
    def from_stored(cls, config: dict[str, Any], origin: str | None = None) -> "TrainConfig":
        saved = config_from_dict(cls, config.get("training", {}), origin)
        if saved.task == "colorize" and saved.color_output is None:  # a run from before the chroma head
            saved.color_output = config.get("model", {}).get("color_output") or "rgb"
        return saved

    @property
    def tiling(self) -> Tiling:
        """How whole images meet this run's model: as they are, or in patch × patch tiles."""
        return Tiling(self.patch)

    def _fill_defaults(self) -> None:
        self.model = self.model or default_model(self.task)
        preset = get_preset(self.model)
        self.model_args = resolve_params(self.model, self.model_args)
        for key in self.PRESET_DEFAULTS:
            if getattr(self, key) is None:
                setattr(self, key, preset.training[key])
        self.lr_schedule = self.lr_schedule or preset.training.get("lr_schedule", "none")  # cosine for unet
        if self.dataset is None:
            self.dataset = default_dataset(self.data_dir)

    def _resolve_kind(self, named_dataset: bool) -> None:
        known = dataset_names()
        check(not named_dataset or self.dataset in known or self.dataset.startswith(("folder:", "mvtec:")),
              f"{self.where('dataset')} {self.dataset!r} is unknown; choose one of {', '.join(known)}, "
              "folder:PATH or mvtec:PATH")
        if needs_inspect_checks(self):
            check_inspect(self)
        if self.normal_classes is None and inspection_dataset(self.dataset):
            self.normal_classes = [GOOD]  # an inspection dataset trains on its good parts only
        check(self.noise is None or self.task != "reconstruct",
              f"--noise {self.noise} has no effect on a reconstruction run; add --task denoise to train a denoiser")
        if self.task == "denoise" and self.noise is None:
            self.noise = "gaussian:0.5"
        if self.task == "colorize":
            check(self.noise in (None, "gray"), "--task colorize takes no --noise (its input is the gray image)")
            self.noise = "gray"
            try:
                self.color_output = canonical_color_output(self.color_output or "chroma")
            except ConvaeError as error:
                raise ConvaeError(f"{self.where('color_output')}: {error}") from None
        else:
            check(self.color_output is None, f"--color-output is for --task colorize, not {self.task}")
        if self.noise is not None:
            self.noise = str(parse_corruption(self.noise))
        if self.val_fraction is None:
            # Anomaly thresholds are fitted on held-out normal images, so keep some by default.
            self.val_fraction = 0.1 if self.normal_classes is not None else 0.0
        self._check_loss()
        if self.loss == "bce" and self.model in UNBOUNDED_OUTPUT:
            raise ConvaeError(f"--loss bce needs outputs in [0,1]; {self.model} predicts noise with no Sigmoid, "
                              "use --loss mse or l1")
        if self.loss == "bce" and self.model_args.get("out_activation") == "none":
            raise ConvaeError(
                f"--loss bce needs outputs in [0,1]; use --model-arg out_activation=sigmoid with {self.model}"
            )

    def _check_loss(self) -> None:
        """mse, bce, l1, or rd:LAMBDA, which exactly the codec presets train with."""
        where = self.where("loss")
        lam = rd_lambda(self.loss, where)
        codec = self.model in CODEC_PRESETS
        check(lam is not None or self.loss in LOSSES,
              f"{where} must be one of {', '.join(LOSSES)} or rd:LAMBDA, got {self.loss!r}")
        check(lam is None or codec, f"{where} {self.loss} trains a codec; add --model codec or --model codec-hyper")
        check(lam is not None or not codec, f"--model {self.model} trains with a rate–distortion loss, "
              f"e.g. --loss rd:0.013, not {where} {self.loss}")
        check(not codec or self.task == "reconstruct", f"--model {self.model} compresses images; it trains with "
              f"--task reconstruct, not --task {self.task}")
        if lam is not None:
            self.loss = f"rd:{lam:g}"

    def corruption(self) -> Corruption | None:
        """What the model sees instead of the clean image (None: the clean image)."""
        return parse_corruption(self.noise) if self.noise else None

    def model_shapes(self, data_shape: tuple[int, int, int]) -> tuple[tuple[int, int, int], int]:
        """(input shape, output channels): colorization maps 1 channel to the data's 3; a
        patch run's model takes one patch."""
        data_shape = self.tiling.model_shape(data_shape)
        if self.task == "colorize":
            if data_shape[0] != 3:
                raise ConvaeError(f"--task colorize needs colour images, the dataset has {data_shape[0]} channel(s)")
            return (1, data_shape[1], data_shape[2]), 3
        return data_shape, data_shape[0]


CLASSIFY_FIELDS = {
    **BASE_FIELDS, "optimizer": Field("str", choices=CLASSIFY_OPTIMIZERS),
    "momentum": Field("float", low=0, high=1, high_open=True), "weight_decay": Field("float", low=0),
    "augment": Field("str", choices=AUGMENTS), "split_seed": Field("int"), "limit": Field("int", low=2),
}


@dataclass
class ClassifyConfig(RunSettings):
    """Everything needed to rebuild a classifier and repeat its training run.

    Fields left as None take the classifier preset's defaults in :meth:`resolved`
    (for ``cnn`` those are the reference settings: SGD lr 0.01, batch 256).
    """

    model: str = "cnn"
    momentum: float | None = None
    weight_decay: float | None = None
    augment: str | None = None
    val_fraction: float | None = 0.2
    split_seed: int = 0
    limit: int | None = None  # train (and validate) on the first N training images only

    FIELDS: ClassVar[dict[str, Field]] = CLASSIFY_FIELDS
    PRESET_DEFAULTS: ClassVar[tuple[str, ...]] = ("epochs", "batch_size", "lr", "optimizer", "momentum",
                                                   "weight_decay", "lr_schedule", "augment")

    @property
    def tiling(self) -> Tiling:
        return Tiling(None)

    def _fill_defaults(self) -> None:
        preset = get_classifier(self.model)
        self.dataset = self.dataset or "mnist"
        for key in self.PRESET_DEFAULTS:
            if getattr(self, key) is None:
                setattr(self, key, preset.training[key])

    def _resolve_kind(self, named_dataset: bool) -> None:
        self.check_types()  # the preset's defaults pass the same checks as a user's values
