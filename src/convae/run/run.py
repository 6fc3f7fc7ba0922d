"""The ``Run`` object: the one way into a run directory for every verb and application.

A run directory is the artifact everything meets at. ``Run.open(path)`` gives its typed
config, its model on a device, its splits, the digest of its weights and a place to
write named artifacts; no application rebuilds a model, a split or a hash on its own.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from convae.core.atomic import read_json, write_json
from convae.core.errors import ModelError, RunError
from convae.models import build_model, get_preset
from convae.models.classifier import build_classifier, get_classifier
from convae.run.config import ClassifyConfig, TrainConfig
from convae.run.files import (
    CHECKSUM,
    CONFIG,
    FIGURES,
    WEIGHTS,
    check_state_dict,
    load_weights,
    read_config,
    read_metrics,
    require_run,
    tensors_checksum,
    weights_metadata,
)
from convae.run.splits import Splits
from convae.run.tiling import Tiling
from convae.run.zoo import CARD, is_zoo, zoo_run_dir

AUTOENCODER = "autoencoder"
CLASSIFIER = "classifier"
#: The verb that makes each kind of run, for messages that say which one a verb needs.
MAKER = {AUTOENCODER: "convae train", CLASSIFIER: "convae classify train"}


@dataclass(frozen=True)
class RunConfig:
    """A run's config.json, typed where verbs need it; ``raw`` is the stored dict as it is."""

    raw: dict[str, Any]
    source: Path

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    @property
    def kind(self) -> str:
        return CLASSIFIER if self.raw.get("kind") == CLASSIFIER else AUTOENCODER

    @property
    def task(self) -> str:
        return self.raw.get("task") or self.raw.get("training", {}).get("task") or "reconstruct"

    @property
    def reconstructs(self) -> bool:
        """Its output is its input rebuilt: a reconstruction run, or an inspect run's reconstructive network."""
        return self.task in ("reconstruct", "inspect")

    @cached_property
    def training(self) -> TrainConfig | ClassifyConfig:
        cls = ClassifyConfig if self.kind == CLASSIFIER else TrainConfig
        return cls.from_dict(self.raw.get("training", {}), origin=str(self.source))

    @property
    def tiling(self) -> Tiling:
        """How whole images meet this run's model (a classifier's: always whole)."""
        return self.training.tiling

    @property
    def model_name(self) -> str:
        return self.raw["model"]["name"]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.raw["model"]["input_shape"])  # type: ignore[return-value]

    @property
    def dataset_spec(self) -> str:
        return str(self.raw.get("dataset", {}).get("spec") or self.training.dataset)

    def normal_class_names(self) -> list[str] | None:
        indices = self.raw.get("training", {}).get("normal_classes")
        if indices is None:
            return None
        classes = self.raw.get("dataset", {}).get("classes") or []
        return [classes[i] if i < len(classes) else str(i) for i in indices]


def network_from_config(config: dict[str, Any], input_shape: tuple[int, ...] | None = None,
                        source: Path | str = CONFIG) -> torch.nn.Module:
    """The untrained network a config.json describes (at ``input_shape`` if given), either kind.

    An unknown model name is its own error; a shape the model cannot take names the model
    and the input.
    """
    model = config["model"]
    try:
        shape = tuple(input_shape or model["input_shape"])
        name = model["name"]
        if config.get("kind") == CLASSIFIER:
            get_classifier(name)
            n_classes = int(model["n_classes"])
            make = lambda: build_classifier(name, shape, n_classes)  # noqa: E731
        else:
            get_preset(name)
            make = lambda: build_model(name, shape, model.get("params", {}), model.get("out_channels"),  # noqa: E731
                                       model.get("color_output"))
    except KeyError as error:
        raise RunError(f"{source}: model section lacks {error}") from None
    try:
        return make()
    except ModelError as error:
        raise ModelError(f"{name} cannot take input {'x'.join(map(str, shape))}: {error}") from None


def _a(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


class Run:
    """One run directory: config, model, splits, digest and artifacts."""

    def __init__(self, path: Path, config: RunConfig, *, data_dir: str | Path | None = None,
                 dataset: str | None = None) -> None:
        self.path = path
        self.config = config
        #: Where the run's data is now, when it moved since training (--data-dir, --dataset).
        self.data_dir = str(Path(data_dir).expanduser().resolve()) if data_dir is not None else None
        self.dataset = dataset

    @classmethod
    def of(cls, run: "str | Path | Run", *, kind: str | None = None, verb: str = "") -> "Run":
        """``run`` itself when it is already open (checked to be of ``kind``), else :meth:`open` it."""
        if isinstance(run, Run):
            if kind is not None:
                run.require(kind, verb)
            return run
        return cls.open(run, kind=kind, verb=verb)

    @classmethod
    def open(cls, path: str | Path, *, kind: str | None = None, verb: str = "", weights: bool = True,
             data_dir: str | Path | None = None, dataset: str | None = None) -> "Run":
        """Open a run directory; ``kind`` refuses the other kind of run in one line naming ``verb``.

        ``weights=False`` opens a run that has a config but no weights yet (shape tables);
        ``data_dir`` and ``dataset`` point at the run's data where it is now. ``zoo:NAME`` opens a
        bundled model (convae.run.zoo): its checked copy in the cache, so the package is never written.
        """
        path = zoo_run_dir(str(path)) if is_zoo(path) else Path(path)
        if weights:
            require_run(path)
        elif not (path / CONFIG).exists():
            raise RunError(f"{path}: not a run directory (no {CONFIG})" if path.is_dir()
                           else f"{path}: no such run directory")
        run = cls(path, RunConfig(read_config(path), path / CONFIG), data_dir=data_dir, dataset=dataset)
        if kind is not None:
            run.require(kind, verb)
        return run

    def require(self, kind: str, verb: str = "") -> None:
        """Refuse, in one line, a run of the other kind than ``verb`` needs."""
        found = self.config.kind
        if found != kind:
            how = f"`{verb}` needs" if verb else "this needs"
            raise RunError(f"{self.path}: {_a(found)} {found} run, not {_a(kind)} {kind} run; {how} one made by "
                           f"`{MAKER[kind]}`")

    # -- the model -------------------------------------------------------------------------
    def network(self, input_shape: tuple[int, ...] | None = None) -> torch.nn.Module:
        """The untrained network of this run (weights not loaded), at ``input_shape`` if given."""
        return network_from_config(self.config.raw, input_shape, self.config.source)

    def weights(self) -> dict[str, torch.Tensor]:
        return load_weights(self.path / WEIGHTS)

    def model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The trained model, checked against its config and its checksum, in eval mode."""
        model = self.network()
        weights = self.weights()
        check_state_dict(self.path / WEIGHTS, model, weights)
        model.load_state_dict(weights)
        return model.to(device).eval()

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the weights (names, dtypes, shapes, bytes): the identity of this run's model."""
        stored = weights_metadata(self.path / WEIGHTS).get(CHECKSUM)
        return stored or tensors_checksum(self.weights())

    # -- data ------------------------------------------------------------------------------
    def splits(self, data_dir: str | Path | None = None) -> Splits:
        """The run's splits as its config describes them, from where the data is now."""
        cfg = self.config.training
        data_dir = data_dir if data_dir is not None else self.data_dir
        if (self.path / CARD).is_file() and self.dataset is None:  # a bundled model (convae.run.zoo)
            raise RunError(f"zoo:{self.path.name.rsplit('-', 1)[0]} was trained on data that does not ship with it; "
                           "give --dataset folder:YOUR_IMAGES to measure it on yours")
        if data_dir is not None or self.dataset is not None:
            cfg = dataclasses.replace(cfg, data_dir=str(data_dir) if data_dir is not None else cfg.data_dir,
                                      dataset=self.dataset or cfg.dataset)
        return Splits(cfg)

    # -- artifacts -------------------------------------------------------------------------
    def artifact(self, name: str) -> Path:
        return self.path / name

    @property
    def figures(self) -> Path:
        return self.path / FIGURES

    def write_json(self, name: str, data: Any) -> Path:
        write_json(self.path / name, data)
        return self.path / name

    def read_json(self, name: str) -> Any | None:
        """An artifact the run wrote (an evaluation, a rate table), checked before a verb trusts it:
        a JSON object whose numbers are finite, and whose shares (AUROC, accuracy, F1 ...) are in [0, 1]."""
        path = self.path / name
        if not path.exists():
            return None
        data = read_json(path)
        if not isinstance(data, dict):
            raise RunError(f"{path}: not a convae result (a JSON object); run the verb that writes it again")
        check_numbers(data, path)
        return data

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)


#: Result fields that are shares: anything outside [0, 1] there is damage, not a result.
SHARES = frozenset({"auroc", "average_precision", "accuracy", "f1", "precision", "recall", "pixel_auroc", "aupro",
                    "false_positive_rate", "test_accuracy"})


def check_numbers(value: Any, path: Path, where: str = "") -> None:
    """Every number in ``value`` finite, and every share in [0, 1]; else one line naming the field."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_numbers(item, path, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_numbers(item, path, f"{where}[{i}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise RunError(f"{path}: {where} is {value}, not a finite number; run the verb that writes it again")
        if where.rsplit(".", 1)[-1] in SHARES and not 0.0 <= value <= 1.0:
            raise RunError(f"{path}: {where} is {value}, outside [0, 1]; run the verb that writes it again")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, RunConfig]:
    """Shorthand for Python use: a run's trained model in eval mode and its config."""
    run = Run.open(path)
    return run.model(device), run.config

