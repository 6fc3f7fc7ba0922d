"""Classification: train and use the CNN classifiers, and probe what an autoencoder's code knows.

Everything writes and reads the same kind of run directory as the autoencoder trainer
(see :mod:`convae.runs`): ``config.json`` (with ``"kind": "classifier"``),
``model.safetensors``, ``metrics.jsonl`` (one row per epoch with train/val loss and
accuracy), ``eval-test.json`` and ``figures/confusion-test.png``. A classifier run is
written epoch by epoch, each file atomically, so a killed run keeps its last epoch.

The validation split follows the reference example: the training split is cut 80/20
with a permutation seeded by ``split_seed`` (0), in the way
``torch.utils.data.random_split`` does it (the first 80% of ``randperm(n)`` train, the
rest validate). The test split is only touched by ``evaluate`` and at the end of training.

The linear probe (:func:`probe_autoencoder`) fits a logistic regression on the codes an
autoencoder gives the training images and scores it on the test images: a direct measure
of how much class information survives the bottleneck.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from convae import __version__
from convae.data import Batches, ImageSet, load_dataset, load_splits
from convae.errors import ConvaeError, DataError, RunError
from convae.models.classifier import build_classifier, get_classifier
from convae.runs import (
    CONFIG,
    FIGURES,
    WEIGHTS,
    check_state_dict,
    config_from_dict,
    load_weights,
    read_config,
    require_run,
    run_lock,
    save_weights,
    write_json,
    write_metrics,
)
from convae.train import pick_device, seed_everything

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "onecycle", "cosine")
AUGMENTS = ("none", "shift")
SHIFT_PIXELS = 2

Log = Callable[[str], None]


# -- configuration ---------------------------------------------------------------------


@dataclass
class ClassifyConfig:
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

    def resolved(self) -> "ClassifyConfig":
        """A copy with the preset's defaults filled in and every value checked (one-line errors)."""
        preset = get_classifier(self.model)
        config = dataclasses.replace(self, dataset=self.dataset or "mnist")
        for key in ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule", "augment"):
            if getattr(config, key) is None:
                setattr(config, key, preset.training[key])
        _check(config.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
        _check(config.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {config.schedule!r}")
        _check(config.augment in AUGMENTS, f"--augment must be one of {', '.join(AUGMENTS)}, got {config.augment!r}")
        _check(config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}")
        _check(config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}")
        _check(config.lr > 0 and math.isfinite(config.lr), f"--lr must be a positive number, got {config.lr}")
        _check(0 <= config.momentum < 1, f"--momentum must be in [0, 1), got {config.momentum}")
        _check(config.weight_decay >= 0, f"--weight-decay must be non-negative, got {config.weight_decay}")
        _check(0 <= config.val_fraction < 1, f"--val-fraction must be in [0, 1), got {config.val_fraction}")
        _check(config.limit is None or config.limit >= 2, f"--limit must be at least 2 images, got {config.limit}")
        _check(config.device in ("auto", "cpu", "cuda") or config.device.startswith("cuda:"),
               f"--device must be auto, cpu or cuda, got {config.device!r}")
        _check(config.threads is None or config.threads >= 1, f"--threads must be at least 1, got {config.threads}")
        return config

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["image_size"] = list(self.image_size) if self.image_size else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClassifyConfig":
        return config_from_dict(cls, data)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConvaeError(message)


# -- data ------------------------------------------------------------------------------


def _require_labels(data: ImageSet) -> None:
    if len(data) == 0:
        raise DataError(f"{data.name}/{data.split}: no images")
    if not data.classes or bool((data.labels < 0).any()):
        raise DataError(
            f"{data.name}/{data.split}: images without class labels; classification needs labelled data "
            f"(for a folder dataset, one sub-folder per class)"
        )


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices): the first (1 - val_fraction)·n of ``randperm(n)`` seeded with ``seed`` train.

    Same cut as ``random_split(range(n), [n - n_val, n_val], generator=torch.Generator().manual_seed(seed))``.
    """
    n_val = int(n * val_fraction)
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return permutation[: n - n_val], permutation[n - n_val :]


def shift_images(x: torch.Tensor, generator: torch.Generator, pixels: int = SHIFT_PIXELS) -> torch.Tensor:
    """Translate each image by a random whole number of pixels in [-pixels, pixels], zero fill.

    Small shifts are the one augmentation that reliably helps on digits; doing it as one
    gather per batch keeps it cheap on a CPU and reproducible from ``generator``.
    """
    n, _, height, width = x.shape
    dy = torch.randint(-pixels, pixels + 1, (n, 1), generator=generator)
    dx = torch.randint(-pixels, pixels + 1, (n, 1), generator=generator)
    padded = F.pad(x, (pixels, pixels, pixels, pixels))
    rows = (torch.arange(height) + pixels + dy).to(x.device)  # N×H
    cols = (torch.arange(width) + pixels + dx).to(x.device)  # N×W
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices around a slice put their dimensions first: N×H×W×C.
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def _scores(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device
) -> tuple[float, torch.Tensor]:
    """(mean cross-entropy, predicted labels) over uint8 images, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    predictions = []
    for x, y in Batches(images, batch_size, shuffle=False, seed=0, device=device, labels=labels):
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        predictions.append(logits.argmax(1).cpu())
    model.train(was_training)
    return loss_sum / max(len(images), 1), torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)


# -- training --------------------------------------------------------------------------


def _optimizer(config: ClassifyConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(
    config: ClassifyConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Stepped once per batch; None for a constant learning rate (the reference)."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(total_steps, 1))
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return None


def train_classifier(
    config: ClassifyConfig,
    run_dir: str | Path,
    *,
    train_set: ImageSet | None = None,
    test_set: ImageSet | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Train a classifier into ``run_dir``; returns the last metrics row plus the test accuracy.

    ``train_set``/``test_set`` may be passed directly (Python use, tests); otherwise they
    are loaded from ``config.dataset``. With the same seed, a rerun gives bit-identical
    weights on the same machine (``deterministic`` also forces deterministic kernels).
    """
    if train_set is not None and config.dataset is None:
        config = dataclasses.replace(config, dataset=train_set.name)
    cfg = config.resolved()
    run_dir = Path(run_dir)
    say = log or (lambda message: None)
    if (run_dir / CONFIG).exists() or (run_dir / WEIGHTS).exists():
        raise RunError(f"{run_dir}: already holds a run; pick a new --out")
    with run_lock(run_dir):
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed, cfg.deterministic)
        device = pick_device(cfg.device)
        if train_set is None:
            train_set, test_set = load_splits(
                cfg.dataset, data_dir=cfg.data_dir, channels=cfg.channels, image_size=cfg.image_size
            )
        elif test_set is None:
            raise ConvaeError("train_classifier: pass test_set together with train_set")
        assert test_set is not None
        _require_labels(train_set)
        _require_labels(test_set)
        if cfg.limit is not None and cfg.limit < len(train_set):
            train_set = train_set.subset(torch.arange(cfg.limit))
        train_idx, val_idx = split_train_val(len(train_set), cfg.val_fraction, cfg.split_seed)
        train_part = train_set.subset(train_idx)
        val_part = train_set.subset(val_idx) if len(val_idx) else None
        classes = list(train_set.classes)
        model = build_classifier(cfg.model, train_set.shape, len(classes)).to(device)
        _write_config(run_dir, cfg, train_set, train_part, val_part, test_set, model)
        optimizer = _optimizer(cfg, model)
        steps_per_epoch = -(-len(train_part) // cfg.batch_size)
        scheduler = _scheduler(cfg, optimizer, steps_per_epoch * cfg.epochs)
        images = train_part.images.to(device) if device.type == "cuda" else train_part.images
        labels = train_part.labels.to(device) if device.type == "cuda" else train_part.labels
        shifts = torch.Generator().manual_seed(cfg.seed + 1)
        metrics: list[dict[str, Any]] = []
        say(
            f"training {cfg.model} on {train_set.name}: {len(train_part):,} train / "
            f"{len(val_part) if val_part is not None else 0:,} val images, {cfg.epochs} epochs, "
            f"{cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size} → {run_dir}"
        )
        for epoch in range(cfg.epochs):
            model.train()
            started = time.perf_counter()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen = 0
            try:
                for x, y in Batches(images, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch,
                                    device=device, labels=labels):
                    if cfg.augment == "shift":
                        x = shift_images(x, shifts)
                    logits = model(x)
                    loss = F.cross_entropy(logits, y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                    loss_sum += loss.detach().double() * x.shape[0]
                    correct += (logits.detach().argmax(1) == y).sum()
                    seen += x.shape[0]
            except KeyboardInterrupt:
                done = f"epoch {epoch}" if epoch else "no finished epoch"
                raise ConvaeError(f"interrupted during epoch {epoch + 1}; {run_dir} keeps {done}") from None
            seconds = time.perf_counter() - started
            train_loss = (loss_sum / max(seen, 1)).item()
            if not math.isfinite(train_loss):
                raise ConvaeError(
                    f"loss became {train_loss} in epoch {epoch + 1}; try a lower --lr (now {cfg.lr})"
                )
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "train_accuracy": correct.item() / max(seen, 1),
                "val_loss": None,
                "val_accuracy": None,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(seconds, 4),
                "images_per_s": round(seen / seconds, 1) if seconds > 0 else None,
            }
            if val_part is not None:
                val_loss, predicted = _scores(model, val_part.images, val_part.labels, 1024, device)
                row["val_loss"] = val_loss
                row["val_accuracy"] = (predicted == val_part.labels).double().mean().item()
            metrics.append(row)
            save_weights(run_dir / WEIGHTS, model.state_dict(), {"epoch": str(epoch + 1)})
            write_metrics(run_dir, metrics)
            val_text = (
                f"  val loss {row['val_loss']:.4f}  val acc {100 * row['val_accuracy']:.2f}%"
                if row["val_accuracy"] is not None else ""
            )
            say(
                f"epoch {epoch + 1}/{cfg.epochs}  train loss {train_loss:.4f}  "
                f"train acc {100 * row['train_accuracy']:.2f}%{val_text}  {seconds:.1f}s"
            )
        result = _evaluate_model(model, test_set, classes, device, run_dir, figure=True)
        say(f"test accuracy {100 * result['accuracy']:.2f}% on {result['images']:,} images")
        return {**metrics[-1], "test_accuracy": result["accuracy"], "test_loss": result["loss"]}


def _write_config(
    run_dir: Path,
    cfg: ClassifyConfig,
    full_train: ImageSet,
    train_part: ImageSet,
    val_part: ImageSet | None,
    test_set: ImageSet,
    model: torch.nn.Module,
) -> None:
    preset = get_classifier(cfg.model)
    config = {
        "kind": "classifier",
        "task": "classify",
        "convae_version": __version__,
        "torch_version": torch.__version__,
        "python_version": sys.version.split()[0],
        "dataset": {
            "spec": cfg.dataset,
            "name": full_train.name,
            "train_size": len(train_part),
            "val_size": len(val_part) if val_part is not None else 0,
            "test_size": len(test_set),
            "classes": list(full_train.classes),
        },
        "model": {
            "name": cfg.model,
            "params": {},
            "input_shape": list(full_train.shape),
            "n_classes": len(full_train.classes),
            "parameters": sum(p.numel() for p in model.parameters()),
            "summary": preset.summary,
        },
        "classes": list(full_train.classes),
        "training": cfg.to_dict(),
        "split": {
            "val_fraction": cfg.val_fraction,
            "split_seed": cfg.split_seed,
            "method": "first (1 - val_fraction)·n of torch.randperm(n, seeded split_seed) train, the rest validate",
        },
        "conventions": {
            "pixels": "float32 in [0, 1], NCHW, no normalisation",
            "loss": "cross-entropy, mean over images",
        },
    }
    write_json(run_dir / CONFIG, config)


# -- loading, evaluating, predicting ------------------------------------------------------


def load_classifier(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained classifier of a run directory, in eval mode, and its config."""
    run_dir = require_run(Path(run_dir))
    config = read_config(run_dir)
    if config.get("kind") != "classifier":
        raise RunError(f"{run_dir}: an autoencoder run, not a classifier run (train one with `convae classify train`)")
    model_cfg = config["model"]
    try:
        model = build_classifier(model_cfg["name"], tuple(model_cfg["input_shape"]), int(model_cfg["n_classes"]))
    except KeyError as error:
        raise RunError(f"{run_dir / CONFIG}: model section lacks {error}") from None
    weights = load_weights(run_dir / WEIGHTS)
    check_state_dict(run_dir / WEIGHTS, model, weights)
    model.load_state_dict(weights)
    return model.to(device).eval(), config


def _load_split(config: dict[str, Any], split: str) -> ImageSet:
    if split not in ("train", "test"):
        raise ConvaeError(f"--split must be train or test, got {split!r}")
    cfg = ClassifyConfig.from_dict(config["training"])
    data = load_dataset(cfg.dataset, split, data_dir=cfg.data_dir, channels=cfg.channels, image_size=cfg.image_size)
    _require_labels(data)
    return data


def _evaluate_model(
    model: torch.nn.Module,
    data: ImageSet,
    classes: Sequence[str],
    device: torch.device,
    run_dir: Path | None,
    *,
    split: str = "test",
    figure: bool = True,
) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix  # noqa: PLC0415

    loss, predicted = _scores(model, data.images, data.labels, 1024, device)
    truth = data.labels.cpu()
    matrix = confusion_matrix(truth.numpy(), predicted.numpy(), labels=list(range(len(classes))))
    per_class = {
        name: (float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None) for i, name in enumerate(classes)
    }
    result: dict[str, Any] = {
        "split": split,
        "images": len(data),
        "accuracy": float((predicted == truth).double().mean().item()),
        "loss": loss,
        "classes": list(classes),
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
        "confusion_rows": "true class",
        "confusion_columns": "predicted class",
    }
    if run_dir is not None:
        if figure:
            result["figure"] = str(confusion_figure(matrix.tolist(), classes, run_dir / FIGURES / f"confusion-{split}.png",
                                                    title=f"{split} accuracy {100 * result['accuracy']:.2f}%"))
        write_json(run_dir / f"eval-{split}.json", result)
    return result


def evaluate_classifier(
    run_dir: str | Path,
    *,
    split: str = "test",
    data: ImageSet | None = None,
    device: str = "auto",
    figure: bool = True,
) -> dict[str, Any]:
    """Accuracy, loss, per-class accuracy and the confusion matrix of a classifier run.

    The images are the run's dataset split as its config describes, or ``data`` when
    given (Python use). Also writes ``RUN_DIR/eval-SPLIT.json`` and
    ``RUN_DIR/figures/confusion-SPLIT.png``.
    """
    target = pick_device(device)
    model, config = load_classifier(run_dir, target)
    if data is None:
        data = _load_split(config, split)
    else:
        _require_labels(data)
        if tuple(data.shape) != tuple(config["model"]["input_shape"]):
            raise DataError(
                f"{data.name}: images are {'x'.join(map(str, data.shape))}, the model in {run_dir} takes "
                f"{'x'.join(map(str, config['model']['input_shape']))}"
            )
    classes = config.get("classes") or data.classes
    if len(classes) != config["model"]["n_classes"]:
        raise RunError(f"{Path(run_dir) / CONFIG}: {len(classes)} class names for {config['model']['n_classes']} outputs")
    return _evaluate_model(model, data, classes, target, Path(run_dir), split=split, figure=figure)


def confusion_text(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """The confusion matrix as aligned text: rows are true classes, columns predictions."""
    labels = [str(c) for c in classes]
    width = max(max(len(label) for label in labels), max(len(str(v)) for row in matrix for v in row), 4)
    head = " " * (width + 1) + " ".join(label[:width].rjust(width) for label in labels) + "   ← predicted"
    lines = [head]
    for label, row in zip(labels, matrix):
        lines.append(label[:width].rjust(width) + " " + " ".join(str(v).rjust(width) for v in row))
    lines.append("↑ true class")
    return "\n".join(lines)


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = "") -> Path:
    """The confusion matrix as a PNG heat map with the counts written in."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from convae.viz import save_figure  # noqa: PLC0415

    n = len(classes)
    fig, axis = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    data = torch.tensor(matrix, dtype=torch.float64)
    shown = data / data.sum(1, keepdim=True).clamp(min=1)
    axis.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            axis.text(j, i, str(int(data[i, j])), ha="center", va="center", fontsize=7,
                      color="white" if shown[i, j] > 0.5 else "black")
    axis.set_xticks(range(n), [str(c) for c in classes], rotation=45 if max(len(str(c)) for c in classes) > 2 else 0)
    axis.set_yticks(range(n), [str(c) for c in classes])
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    if title:
        axis.set_title(title)
    return save_figure(fig, path)


def load_image_for(path: str | Path, input_shape: Sequence[int], *, invert: bool = False) -> torch.Tensor:
    """One image file as the model's input: float 1×C×H×W in [0, 1].

    Any PNG/JPEG/BMP size and mode is accepted: colour is converted to gray (or gray
    replicated to colour) and the image resized with antialiasing to the model's H×W.
    ``invert`` turns dark-on-light drawings into MNIST's light-on-dark.
    """
    from convae.data.files import image_for_model  # noqa: PLC0415

    converted, _ = image_for_model(path, input_shape)
    x = converted.unsqueeze(0).float().div_(255)
    return 1.0 - x if invert else x


@torch.no_grad()
def predict_images(
    run_dir: str | Path, paths: Sequence[str | Path], *, invert: bool = False, device: str = "auto"
) -> list[dict[str, Any]]:
    """Label and class probabilities for each image file, in the order given."""
    if not paths:
        raise ConvaeError("predict needs at least one image file")
    target = pick_device(device)
    model, config = load_classifier(run_dir, target)
    shape = config["model"]["input_shape"]
    classes = config.get("classes") or [str(i) for i in range(config["model"]["n_classes"])]
    batch = torch.cat([load_image_for(p, shape, invert=invert) for p in paths]).to(target)
    probabilities = torch.softmax(model(batch), dim=1).cpu()
    results = []
    for path, probs in zip(paths, probabilities):
        index = int(probs.argmax())
        results.append(
            {
                "path": str(path),
                "label": str(classes[index]),
                "class_index": index,
                "probability": float(probs[index]),
                "probabilities": {str(name): float(p) for name, p in zip(classes, probs)},
            }
        )
    return results


# -- the linear probe ------------------------------------------------------------------------


@torch.no_grad()
def _codes(model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    from convae.models import code_values  # noqa: PLC0415

    chunks = []
    for x in Batches(images, batch_size, shuffle=False, seed=0, device=device):
        chunks.append(code_values(model.encode(x)).flatten(1).float().cpu())
    return torch.cat(chunks)


def probe_autoencoder(
    run_dir: str | Path,
    *,
    limit: int | None = None,
    max_iter: int = 500,
    baseline: bool = False,
    device: str = "auto",
    log: Log | None = None,
) -> dict[str, Any]:
    """Test accuracy of a logistic regression fitted on an autoencoder's codes of the training split.

    Codes are standardised (zero mean, unit variance per feature, fitted on the training
    codes) so lbfgs converges in a few hundred iterations. ``limit`` uses only the first
    N training images (the fit is the slow part); ``baseline`` also fits the same probe on
    the raw pixels, the number a code should be compared with.
    """
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    from convae.runs import load_model  # noqa: PLC0415
    from convae.train import TrainConfig  # noqa: PLC0415

    say = log or (lambda message: None)
    run_dir = Path(run_dir)
    require_run(run_dir)
    config = read_config(run_dir)
    if config.get("kind") == "classifier":
        raise RunError(f"{run_dir}: a classifier run; probe needs an autoencoder run (from `convae train`)")
    _check(limit is None or limit >= 2, f"--limit must be at least 2 images, got {limit}")
    _check(max_iter >= 1, f"--max-iter must be at least 1, got {max_iter}")
    target = pick_device(device)
    model, config = load_model(run_dir, target)
    training = TrainConfig.from_dict(config.get("training", {}))
    spec = training.dataset or config["dataset"]["spec"]
    kwargs = dict(data_dir=training.data_dir, channels=training.channels, image_size=training.image_size)
    train = load_dataset(spec, "train", **kwargs)
    test = load_dataset(spec, "test", **kwargs)
    _require_labels(train)
    _require_labels(test)
    if limit is not None and limit < len(train):
        train = train.subset(torch.arange(limit))
    if len(torch.unique(train.labels)) < 2:
        raise DataError(f"{spec}: the probe's training images hold a single class; use a larger --limit")
    started = time.perf_counter()
    train_codes, test_codes = _codes(model, train.images, target), _codes(model, test.images, target)
    say(f"encoded {len(train):,} train and {len(test):,} test images into {train_codes.shape[1]:,}-value codes")

    def fit(features_train: torch.Tensor, features_test: torch.Tensor) -> tuple[float, float, int]:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        import warnings  # noqa: PLC0415

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: reported below as iterations
            probe.fit(features_train.numpy(), train.labels.numpy())
        iterations = int(probe[-1].n_iter_.max())
        return (
            float(probe.score(features_train.numpy(), train.labels.numpy())),
            float(probe.score(features_test.numpy(), test.labels.numpy())),
            iterations,
        )

    train_accuracy, test_accuracy, iterations = fit(train_codes, test_codes)
    counts = torch.bincount(test.labels, minlength=len(test.classes))
    result: dict[str, Any] = {
        "run": str(run_dir),
        "model": config["model"]["name"],
        "dataset": spec,
        "code_size": int(train_codes.shape[1]),
        "input_size": int(train.images[0].numel()),
        "train_images": len(train),
        "test_images": len(test),
        "train_accuracy": train_accuracy,
        "test_accuracy": test_accuracy,
        "majority_class_accuracy": float(counts.max().item() / max(len(test), 1)),
        "iterations": iterations,
        "converged": iterations < max_iter,
        "probe": f"StandardScaler + LogisticRegression(lbfgs, max_iter={max_iter}) on the flattened code",
    }
    if baseline:
        pixels_train = train.images.flatten(1).float().div(255)
        pixels_test = test.images.flatten(1).float().div(255)
        _, pixel_accuracy, _ = fit(pixels_train, pixels_test)
        result["pixel_baseline_test_accuracy"] = pixel_accuracy
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def probe_text(result: dict[str, Any]) -> str:
    """The probe result as a few readable lines."""
    lines = [
        f"linear probe on the {result['code_size']:,}-value code of {result['model']} ({result['dataset']}):",
        f"  test accuracy  {100 * result['test_accuracy']:.2f}%  ({result['test_images']:,} test images)",
        f"  train accuracy {100 * result['train_accuracy']:.2f}%  ({result['train_images']:,} train images)",
        f"  majority class {100 * result['majority_class_accuracy']:.2f}%",
    ]
    if "pixel_baseline_test_accuracy" in result:
        lines.append(
            f"  raw pixels     {100 * result['pixel_baseline_test_accuracy']:.2f}%  (same probe on the "
            f"{result['input_size']:,} input values)"
        )
    if not result["converged"]:
        lines.append(f"  note: lbfgs stopped at --max-iter {result['iterations']} before converging")
    return "\n".join(lines)


