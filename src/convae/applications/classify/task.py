"""Training a classifier: its task in the one training loop (convae.training.loop).

The validation split follows the reference example: the training split is cut 80/20
with a permutation seeded by ``split_seed`` (0), as ``torch.utils.data.random_split``
does it (convae.run.splits). The test split is only touched by ``evaluate`` and once
training is over. Classifier runs get everything autoencoder runs have: resume after a
kill, a Ctrl-C checkpoint, torchrun DDP and the same progress display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from convae.applications.classify.evaluate import class_scores, evaluate_model
from convae.data import ImageSet
from convae.models.classifier import build_classifier, get_classifier
from convae.run.config import ClassifyConfig
from convae.training.loop import Trainer
from convae.training.tasks import Task, versions

SHIFT_PIXELS = 2


def shift_images(x: torch.Tensor, generator: torch.Generator, pixels: int = SHIFT_PIXELS) -> torch.Tensor:
    """Translate each image by a random whole number of pixels in [-pixels, pixels], zero fill.

    Small shifts are the one augmentation that reliably helps on digits; doing it as one
    gather per batch keeps it cheap on a CPU and reproducible from ``generator``.
    """
    n, _, height, width = x.shape
    dy = torch.randint(-pixels, pixels + 1, (n, 1), generator=generator, device=generator.device).to(x.device)
    dx = torch.randint(-pixels, pixels + 1, (n, 1), generator=generator, device=generator.device).to(x.device)
    padded = F.pad(x, (pixels, pixels, pixels, pixels))
    rows = torch.arange(height, device=x.device) + pixels + dy  # N×H
    cols = torch.arange(width, device=x.device) + pixels + dx  # N×W
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices around a slice put their dimensions first: N×H×W×C.
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


class ClassifyTask(Task):
    """Cross-entropy on labelled images; accuracy is the extra per-epoch sum."""

    config: ClassifyConfig
    extra_sums = 1
    command = "convae classify train"

    @property
    def schedule(self) -> str:
        return self.config.lr_schedule or "none"

    def optimizer_settings(self) -> dict[str, Any]:
        return {"momentum": self.config.momentum, "weight_decay": self.config.weight_decay}

    def train_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.splits.train.images, self.splits.train.labels

    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.splits.train_all.shape)  # type: ignore[return-value]

    def build_model(self) -> torch.nn.Module:
        return build_classifier(self.config.model, self.splits.train_all.shape, len(self.splits.train_all.classes))

    def loss(self, net, x, y, generator, autocast):
        if self.config.augment == "shift":
            x = shift_images(x, generator())
        with autocast:
            logits = net(x)
        return F.cross_entropy(logits.float(), y), (logits.detach().argmax(1) == y).sum().reshape(1)

    def row(self, model, epoch, train_loss, extras, seen, seconds, lr):
        val = self.splits.val
        row: dict[str, Any] = {
            "epoch": epoch, "train_loss": train_loss, "train_accuracy": extras[0] / max(seen, 1),
            "val_loss": None, "val_accuracy": None, "lr": lr, "seconds": round(seconds, 4),
            "images_per_s": round(seen / seconds, 1) if seconds > 0 else None,
        }
        if val is not None:
            row["val_loss"], predicted = class_scores(model, val.images, val.labels, 1024, self.device)
            row["val_accuracy"] = (predicted == val.labels).double().mean().item()
        return row

    def epoch_line(self, row):
        val = (f"  val loss {row['val_loss']:.4f}  val acc {100 * row['val_accuracy']:.2f}%"
               if row["val_accuracy"] is not None else "")
        return (f"epoch {row['epoch']}/{self.config.epochs}  train loss {row['train_loss']:.4f}  "
                f"train acc {100 * row['train_accuracy']:.2f}%{val}  {row['seconds']:.1f}s")

    def start_line(self, run_dir):
        cfg, val = self.config, self.splits.val
        return (f"training {cfg.model} on {self.splits.train_all.name}: {len(self.splits.train):,} train / "
                f"{len(val) if val is not None else 0:,} val images, {cfg.epochs} epochs, "
                f"{cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size} → {run_dir}")

    def config_json(self, model):
        cfg, splits = self.config, self.splits
        full, val = splits.train_all, splits.val
        return {
            "kind": "classifier",
            "task": "classify",
            **versions(),
            "dataset": {"spec": cfg.dataset, "name": full.name, "train_size": len(splits.train),
                        "val_size": len(val) if val is not None else 0, "test_size": len(splits.test),
                        "classes": list(full.classes)},
            "model": {"name": cfg.model, "params": {}, "input_shape": list(full.shape), "n_classes": len(full.classes),
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "summary": get_classifier(cfg.model).summary},
            "classes": list(full.classes),
            "training": cfg.to_dict(),
            "split": {"val_fraction": cfg.val_fraction, "split_seed": cfg.split_seed,
                      "method": "first (1 - val_fraction)·n of torch.randperm(n, seeded split_seed) train, "
                                "the rest validate"},
            "conventions": {"pixels": "float32 in [0, 1], NCHW, no normalisation",
                            "loss": "cross-entropy, mean over images"},
        }

    def finish(self, model, run_dir, last):
        result = evaluate_model(model, self.splits.test, list(self.splits.train_all.classes), self.device,
                                Path(run_dir), figure=True)
        self.last_line = f"test accuracy {100 * result['accuracy']:.2f}% on {result['images']:,} images"
        return {**last, "test_accuracy": result["accuracy"], "test_loss": result["loss"]}


def train_classifier(
    config: ClassifyConfig,
    run_dir: str | Path,
    *,
    train_set: ImageSet | None = None,
    test_set: ImageSet | None = None,
    log: Callable[[str], None] | None = None,
    resume: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a classifier into ``run_dir``; returns the last metrics row plus the test accuracy.

    ``train_set``/``test_set`` may be passed directly (Python use, tests); otherwise they
    are loaded from ``config.dataset``. With the same seed, a rerun gives bit-identical
    weights on the same machine (``deterministic`` also forces deterministic kernels).
    """
    trainer = Trainer(config, run_dir, train_set=train_set, test_set=test_set, task=ClassifyTask, log=log,
                      progress=progress)
    result = trainer.fit(resume=resume)
    if trainer.ranks.is_main and trainer.task is not None:
        trainer.say(trainer.task.last_line)  # type: ignore[attr-defined]
    return result
