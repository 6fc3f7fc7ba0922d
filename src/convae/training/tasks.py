"""What one kind of training contributes to the one loop: the model, the loss, the evaluation.

The loop in :mod:`convae.training.loop` owns everything every run shares: seeding, the
lock, resume, checkpoints, DDP, the schedule, progress and the NaN check. A task says
only what differs: which network to build, how a batch becomes a loss, what to measure
after each epoch, what config.json records, and what to do once training is over.
``ReconstructTask`` covers reconstruct, denoise and colorize runs; the classifier's task
lives with the classifier application (convae.applications.classify.task).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Callable

import torch

from convae import __version__
from convae.core.faults import fault_point
from convae.data import Batches, ImageSet
from convae.data.corrupt import Corruption, batch_generator, item_generators
from convae.data.patches import check_patch_fits
from convae.metrics import ReconstructionMetrics
from convae.models import build_model, code_values
from convae.run.config import ClassifyConfig, TrainConfig
from convae.run.splits import Splits, class_listing
from convae.training.schedule import loss_function


@dataclasses.dataclass(frozen=True)
class StepRandom:
    """The randomness of one training step: a pure function of (seed, epoch, step), so a resumed
    run draws exactly what the uninterrupted one drew.

    Calling it gives this process's batch generator (corruption, noise). ``per_item`` gives one
    generator per item of the process's slice, keyed by the item's place in the global batch,
    so torchrun shards draw what one process draws for the same items (simulated defects).
    """

    seed: int
    epoch: int
    step: int
    shard_step: int
    first: int
    device: torch.device

    def __call__(self) -> torch.Generator:
        return batch_generator(self.seed, self.epoch, self.shard_step, self.device)

    def per_item(self, count: int) -> list[torch.Generator]:
        return item_generators(self.seed, self.epoch, self.step, range(self.first, self.first + count), self.device)


class Task:
    """The interface the loop trains through; subclasses fill in each step of the story."""

    #: How many extra per-epoch sums (beyond the loss) ``loss`` returns, e.g. correct predictions.
    extra_sums = 0
    #: The command a user reruns with --resume, for the interrupt message.
    command = "convae train"

    def __init__(self, config: TrainConfig | ClassifyConfig, splits: Splits, device: torch.device) -> None:
        self.config = config
        self.splits = splits
        self.device = device

    @property
    def schedule(self) -> str:
        return "none"

    def optimizer_settings(self) -> dict[str, Any]:
        return {}

    def train_tensors(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The uint8 training images, and their labels where the loss needs them."""
        raise NotImplementedError

    def batch_options(self) -> dict[str, Any]:
        """What else :class:`Batches` needs to serve this task's training data (patches)."""
        return {}

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def input_shape(self) -> tuple[int, int, int]:
        """C×H×W of one model input."""
        raise NotImplementedError

    def loss(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None,
             generator: StepRandom, autocast: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean loss of the batch, extra sums for this batch or None)."""
        raise NotImplementedError

    def row(self, model: torch.nn.Module, epoch: int, train_loss: float, extras: list[float], seen: int,
            seconds: float, lr: float) -> dict[str, Any]:
        """The metrics row of a finished epoch (evaluates on held-out data in eval mode)."""
        raise NotImplementedError

    def epoch_line(self, row: dict[str, Any]) -> str:
        raise NotImplementedError

    def start_line(self, run_dir: Any) -> str:
        raise NotImplementedError

    def config_json(self, model: torch.nn.Module) -> dict[str, Any]:
        raise NotImplementedError

    def preview(self, model: torch.nn.Module) -> torch.Tensor | None:
        """A picture of what the model does now (C×H×W in [0, 1]) for the TensorBoard log, or None."""
        return None

    def remember(self, model: torch.nn.Module, run_dir: Any, rows: list[dict[str, Any]]) -> None:
        """After each epoch's row, before its checkpoint: keep what the task wants of this epoch."""

    def finish(self, model: torch.nn.Module, run_dir: Any, last: dict[str, Any]) -> dict[str, Any]:
        """Called once after the last epoch; returns what ``fit`` returns."""
        return last

    def complete_row(self, model: torch.nn.Module, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` with what this task measures on some epochs only filled in: a stop on time
        reports a whole evaluation, whichever epoch it stopped in."""
        return row


def versions() -> dict[str, str]:
    """What config.json records of where and when a run was made."""
    return {"convae_version": __version__, "torch_version": torch.__version__,
            "python_version": sys.version.split()[0], "created": time.strftime("%Y-%m-%d %H:%M")}


@torch.no_grad()
def evaluate_metrics(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    corruption: Corruption | None = None,
    seed: int = 0,
    measures: tuple[str, ...] = (),
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> ReconstructionMetrics:
    """``measures`` (and the loss, with ``loss_fn``) over a uint8 image tensor, in eval mode.

    Evaluation corrupts with generators seeded by (seed, -1, batch), so every epoch is
    scored on the same corrupted test images.
    """
    was_training = model.training
    model.eval()
    metrics = ReconstructionMetrics(measures, loss=loss_fn)
    for index, x in enumerate(Batches(images, max(batch_size, 256), shuffle=False, seed=0, device=device)):
        fault_point("evaluate")
        x_in = corruption(x, batch_generator(seed, -1, index, device)) if corruption is not None else x
        metrics.add(model(x_in), x)
    model.train(was_training)
    return metrics


def evaluate_loss(
    model: torch.nn.Module,
    images: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
    device: torch.device,
    corruption: Corruption | None = None,
    seed: int = 0,
) -> float:
    """Mean per-pixel loss over a uint8 image tensor, in eval mode (see :func:`evaluate_metrics`)."""
    return evaluate_metrics(model, images, batch_size, device, corruption, seed, loss_fn=loss_fn).loss


class ReconstructTask(Task):
    """Autoencoders: reconstruct the clean image from itself, a corrupted copy, or its gray."""

    config: TrainConfig

    def __init__(self, config: TrainConfig, splits: Splits, device: torch.device) -> None:
        super().__init__(config, splits, device)
        self.loss_fn = loss_function(config.loss)
        self.corruption = config.corruption()

    @property
    def schedule(self) -> str:
        return self.config.lr_schedule

    def optimizer_settings(self) -> dict[str, Any]:
        return {"momentum": 0.9}

    def train_tensors(self) -> tuple[torch.Tensor, None]:
        if self.config.tiling.tiled:
            check_patch_fits(self.splits.train, self.config.tiling.patch)
        return self.splits.train.images, None

    def batch_options(self) -> dict[str, Any]:
        tiling = self.config.tiling
        return {"patch": tiling.patch, "sizes": self.splits.train.sizes} if tiling.tiled else {}

    def input_shape(self) -> tuple[int, int, int]:
        return self.config.model_shapes(self.splits.train.shape)[0]

    def build_model(self) -> torch.nn.Module:
        cfg = self.config
        input_shape, out_channels = cfg.model_shapes(self.splits.train.shape)
        return build_model(cfg.model, input_shape, cfg.model_args, out_channels, cfg.color_output)

    def loss(self, net, x, y, generator, autocast):
        x_in = self.corruption(x, generator()) if self.corruption is not None else x
        with autocast:
            output = net(x_in)
        return self.loss_fn(output.float(), x), None

    def _evaluate(self, model: torch.nn.Module, data: ImageSet) -> float:
        cfg = self.config
        return evaluate_loss(model, self.splits.measured(data).images, self.loss_fn, cfg.batch_size, self.device, self.corruption, cfg.seed)

    def row(self, model, epoch, train_loss, extras, seen, seconds, lr):
        val = self.splits.val
        blind = self.corruption is not None and self.corruption.high is not None
        return {
            "epoch": epoch,
            "train_loss": train_loss,
            "test_loss": self._evaluate(model, self.splits.test),
            **({"val_loss": self._evaluate(model, val)} if val is not None else {}),
            **({"test_per_level": self._per_level(model)} if blind else {}),
            "seconds": round(seconds, 4),
            "images_per_s": round(seen / seconds, 1) if seconds > 0 else None,
            "loss": self.config.loss,
        }

    def _per_level(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """Blind noise: PSNR and SSIM of the test split at fixed levels across the range."""
        images, cfg = self.splits.measured(self.splits.test).images, self.config
        rows = []
        for level in self.corruption.levels():  # type: ignore[union-attr]
            summary = evaluate_metrics(model, images, cfg.batch_size, self.device, level, cfg.seed,
                                       ("mse", "ssim")).summary()
            rows.append({"noise": str(level), "psnr": summary["psnr"], "ssim": summary["ssim"]})
        return rows

    @torch.no_grad()
    def preview(self, model):
        """Rows of up to 8 test images: the model's input, its output and the target."""
        from torchvision.utils import make_grid

        was_training = model.training
        model.eval()
        x = self.splits.measured(self.splits.test).images[:8].to(self.device).float().div(255)
        x_in = self.corruption(x, batch_generator(self.config.seed, -1, 0, self.device)) if self.corruption else x
        output = model(x_in).float().clamp(0, 1)
        model.train(was_training)
        rgb = lambda t: t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t[:, :3]  # noqa: E731
        return make_grid(torch.cat([rgb(x_in), rgb(output), rgb(x)]).cpu(), nrow=len(x), padding=1, pad_value=1.0)

    def epoch_line(self, row):
        cfg = self.config
        levels = "".join(f"  {r['noise']}: {r['psnr']:.2f} dB" for r in row.get("test_per_level", []))
        return (f"epoch {row['epoch']}/{cfg.epochs}  train {cfg.loss} {row['train_loss']:.5f}  test {cfg.loss} "
                f"{row['test_loss']:.5f}{levels}  {row['seconds']:.1f}s  {row['images_per_s'] or 0:,.0f} img/s")

    def start_line(self, run_dir):
        cfg, train, test = self.config, self.splits.train, self.splits.test
        classes = self.splits.train_all.classes
        listing = f"\n{class_listing(list(classes), self.splits.normal_indices())}" if 1 < len(classes) <= 100 else ""
        shape = (f"{train.shape[0]}×{cfg.patch}×{cfg.patch} patches of images up to {train.shape[1]}×{train.shape[2]}"
                 if cfg.patch else f"{'×'.join(map(str, train.shape))} C×H×W")
        return (f"training {cfg.model} on {cfg.dataset} ({len(train):,} train / {len(test):,} test images, "
                f"{shape}) for {cfg.epochs} epochs (batch {cfg.batch_size}, "
                f"lr {cfg.lr}, loss {cfg.loss}) into {run_dir}{listing}")

    def config_json(self, model):
        cfg, train, test = self.config, self.splits.train, self.splits.test
        input_shape, out_channels = cfg.model_shapes(train.shape)
        with torch.no_grad():
            was_training = model.training
            code = code_values(model.eval().encode(torch.zeros(1, *input_shape, device=next(model.parameters()).device)))
            model.train(was_training)
        return {
            **versions(),
            "task": cfg.task,
            "dataset": {"spec": cfg.dataset, "name": train.name, "train_size": len(train), "test_size": len(test),
                        "classes": list(train.classes)},
            "model": {
                "name": cfg.model,
                "params": cfg.to_dict()["model_args"],
                "input_shape": list(input_shape),
                "out_channels": out_channels,
                "color_output": cfg.color_output,
                "code_shape": list(code.shape[1:]),
            },
            "training": {**cfg.to_dict(), "normal_classes": self.splits.normal_indices()},
            "conventions": {"pixels": "float32 in [0, 1], NCHW", "loss_reduction": "mean per pixel"},
        }
