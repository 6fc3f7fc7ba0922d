"""The training loop, in one file a reader can follow from top to bottom.

``Trainer.fit`` is the whole story: resolve the config, load the data once as uint8,
build the model from its preset, then for each epoch walk a seeded permutation of the
training images in mini-batches, step the optimizer, evaluate on the test split, and
write an atomic checkpoint. Resume restores weights, optimizer, RNG and the position
inside the epoch, so a resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import warnings
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from convae import __version__
from convae.data import Batches, ImageSet, dataset_names, default_dataset, load_splits
from convae.data.corrupt import Corruption, batch_generator, parse_corruption
from convae.errors import ConvaeError, RunError
from convae.models import build_model, get_preset, resolve_params
from convae.runs import (
    CONFIG,
    LOCK,
    STATE,
    WEIGHTS,
    config_from_dict,
    load_state,
    read_config,
    read_metrics,
    run_lock,
    save_state,
    save_weights,
    write_json,
    write_metrics,
)

LOSSES = ("mse", "bce", "l1")
TASKS = ("reconstruct", "denoise", "colorize")
OPTIMIZERS = ("adam", "sgd")


class TrainingInterrupted(ConvaeError):
    """Ctrl-C during training: the checkpoint was saved and the run can be resumed."""


class NonFiniteLoss(ConvaeError):
    """The loss became NaN or Inf; the last good checkpoint was kept."""


@dataclass
class TrainConfig:
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
    normal_classes: list[int] | None = None
    val_fraction: float | None = None

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
        known = dataset_names()
        _check(not named_dataset or config.dataset in known or config.dataset.startswith("folder:"),
               f"--dataset {config.dataset!r} is unknown; choose one of {', '.join(known)} or folder:PATH")
        _check(config.loss in LOSSES, f"--loss must be one of {', '.join(LOSSES)}, got {config.loss!r}")
        _check(config.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        _check(config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}")
        _check(config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}")
        _check(config.lr > 0 and math.isfinite(config.lr), f"--lr must be a positive number, got {config.lr}")
        _check(config.task in TASKS, f"--task must be one of {', '.join(TASKS)}, got {config.task!r}")
        if config.task == "denoise" and config.noise is None:
            config.noise = "gaussian:0.5"
        if config.task == "colorize":
            _check(config.noise in (None, "gray"), "--task colorize takes no --noise (its input is the gray image)")
            config.noise = "gray"
        if config.noise is not None:
            config.noise = str(parse_corruption(config.noise))
        if config.val_fraction is None:
            # Anomaly thresholds are fitted on held-out normal images, so keep some by default.
            config.val_fraction = 0.1 if config.normal_classes is not None else 0.0
        _check(0.0 <= config.val_fraction < 1.0, f"--val-fraction must be in [0, 1), got {config.val_fraction}")
        _check(config.checkpoint_every >= 0, "--checkpoint-every must be 0 (per epoch) or a step count")
        _check(config.device in ("auto", "cpu", "cuda") or config.device.startswith("cuda:"),
               f"--device must be auto, cpu or cuda, got {config.device!r}")
        if config.loss == "bce" and config.model_args.get("out_activation") == "none":
            raise ConvaeError(
                f"--loss bce needs outputs in [0,1]; use --model-arg out_activation=sigmoid with {config.model}"
            )
        return config

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["image_size"] = list(self.image_size) if self.image_size else None
        data["model_args"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_args.items()}
        data["normal_classes"] = list(self.normal_classes) if self.normal_classes is not None else None
        return data

    def corruption(self) -> Corruption | None:
        """What the model sees instead of the clean image (None: the clean image)."""
        return parse_corruption(self.noise) if self.noise else None

    def model_shapes(self, data_shape: tuple[int, int, int]) -> tuple[tuple[int, int, int], int]:
        """(input shape, output channels): colorization maps 1 channel to the data's 3."""
        if self.task == "colorize":
            if data_shape[0] != 3:
                raise ConvaeError(f"--task colorize needs colour images, the dataset has {data_shape[0]} channel(s)")
            return (1, data_shape[1], data_shape[2]), 3
        return data_shape, data_shape[0]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return config_from_dict(cls, data)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConvaeError(message)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConvaeError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean per pixel, so numbers compare across image sizes and with the references."""
    return {"mse": F.mse_loss, "l1": F.l1_loss, "bce": F.binary_cross_entropy}[name]


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np  # noqa: PLC0415

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy ships with torch
        pass
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    # Deterministic mode also NaN-fills every new tensor, a debugging aid that made CPU
    # training ~30 % slower here; no layer we use reads uninitialized memory.
    torch.utils.deterministic.fill_uninitialized_memory = False
    # MaxUnpool scatters to the argmax indices of a max-pool, which never collide, so its
    # result is deterministic even though torch warns about the op in general.
    warnings.filterwarnings("ignore", message="max_unpooling2d_forward_out does not have a deterministic")
    torch.backends.cudnn.benchmark = not deterministic


class Trainer:
    """Train one autoencoder into one run directory.

    ``train_set``/``test_set`` may be given directly (Python use); otherwise they are
    loaded from ``config.dataset``.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        train_set: ImageSet | None = None,
        test_set: ImageSet | None = None,
        progress: bool = True,
        console: Console | None = None,
    ) -> None:
        self.config = config.resolved() if train_set is None else _resolve_with_data(config, train_set)
        self.run_dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        self.progress = progress
        self.train_set, self.test_set = train_set, test_set
        self.device = pick_device(self.config.device)
        self.model: torch.nn.Module | None = None
        self._epoch_totals: Callable[[], tuple[float, int]] = lambda: (0.0, 0)

    # -- the loop -----------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``config.epochs`` and return the last metrics row."""
        created = not self.run_dir.exists()
        try:
            return self._fit(resume)
        finally:
            # A run that failed before writing anything leaves no empty directory behind.
            if created and self.run_dir.is_dir() and {p.name for p in self.run_dir.iterdir()} <= {LOCK}:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def _fit(self, resume: bool) -> dict[str, Any]:
        with run_lock(self.run_dir):
            state = self._prepare_run_dir(resume)
            cfg = self.config
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
            # Tiny weights decay into denormals, which slow CPU arithmetic many times over.
            torch.set_flush_denormal(True)
            seed_everything(cfg.seed, cfg.deterministic)
            train, val, test = self._load_data()
            input_shape, out_channels = cfg.model_shapes(train.shape)
            model = build_model(cfg.model, input_shape, cfg.model_args, out_channels).to(self.device)
            corruption = cfg.corruption()
            optimizer = self._optimizer(model)
            metrics = read_metrics(self.run_dir) if state else []
            epoch, step = 0, 0
            resumed_sum, resumed_seen = 0.0, 0
            if state:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                torch.set_rng_state(state["torch_rng"])
                random.setstate(_as_python_rng(state["python_rng"]))
                epoch, step = state["epoch"], state["step"]
                resumed_sum, resumed_seen = state.get("epoch_loss_sum", 0.0), state.get("epoch_seen", 0)
                metrics = [row for row in metrics if row["epoch"] <= epoch]
                self.console.print(f"resuming {self.run_dir} at epoch {epoch + 1}, step {step}")
            else:
                self.console.print(
                    f"training [bold]{cfg.model}[/] on [bold]{cfg.dataset}[/] ({len(train):,} train / "
                    f"{len(test):,} test images, {'×'.join(map(str, train.shape))}) for {cfg.epochs} epochs "
                    f"(batch {cfg.batch_size}, lr {cfg.lr}, loss {cfg.loss}) into {self.run_dir}",
                    soft_wrap=True,
                )
                self._write_config(train, test)
            self.model = model
            loss_fn = loss_function(cfg.loss)
            images = train.images.to(self.device) if self.device.type == "cuda" else train.images
            check_every = 1 if self.device.type == "cpu" else 25

            while epoch < cfg.epochs:
                batches = Batches(images, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch,
                                  start_step=step, device=self.device)
                model.train()
                started, seen = time.perf_counter(), resumed_seen
                loss_sum = torch.full((), resumed_sum, dtype=torch.float64, device=self.device)
                resumed_sum, resumed_seen = 0.0, 0
                self._epoch_totals = lambda: (loss_sum.item(), seen)
                with self._progress_bar(epoch, len(batches), step) as advance, _StopOnCtrlC() as stop:
                    try:
                        for x in batches:
                            if corruption is not None:
                                x_in = corruption(x, batch_generator(cfg.seed, epoch, step, self.device))
                            else:
                                x_in = x
                            output = model(x_in)
                            loss = loss_fn(output, x)
                            optimizer.zero_grad(set_to_none=True)
                            loss.backward()
                            optimizer.step()
                            step += 1
                            seen += x.shape[0]
                            loss_sum += loss.detach().double() * x.shape[0]
                            if step % check_every == 0 or step == len(batches):
                                value = loss.item()
                                if not math.isfinite(value):
                                    raise NonFiniteLoss(
                                        f"loss became {value} at epoch {epoch + 1}, step {step}; kept the last "
                                        f"good checkpoint in {self.run_dir}; try a lower --lr (now {cfg.lr})"
                                    )
                                advance(value, seen / (time.perf_counter() - started))
                            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < len(batches):
                                self._checkpoint(model, optimizer, epoch, step)
                            if stop.requested:
                                self._checkpoint(model, optimizer, epoch, step)
                                raise TrainingInterrupted(
                                    f"interrupted at epoch {epoch + 1}, step {step}: checkpoint saved; "
                                    f"continue with: convae train --out {self.run_dir} --resume"
                                )
                    except KeyboardInterrupt:
                        # Raised mid-step (second Ctrl-C, or not in the main thread): the model
                        # may be half-updated, so the last checkpoint on disk is the one to keep.
                        raise TrainingInterrupted(
                            f"interrupted at epoch {epoch + 1}, step {step}; kept the last checkpoint; "
                            f"continue with: convae train --out {self.run_dir} --resume"
                        ) from None
                seconds = time.perf_counter() - started
                train_loss = (loss_sum / max(seen, 1)).item()
                test_loss = evaluate_loss(model, test.images, loss_fn, cfg.batch_size, self.device, corruption, cfg.seed)
                epoch, step = epoch + 1, 0
                row = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "test_loss": test_loss,
                    **({"val_loss": evaluate_loss(model, val.images, loss_fn, cfg.batch_size, self.device,
                                                  corruption, cfg.seed)} if val is not None else {}),
                    "seconds": round(seconds, 4),
                    "images_per_s": round(seen / seconds, 1) if seconds > 0 else None,
                    "loss": cfg.loss,
                }
                metrics.append(row)
                self._checkpoint(model, optimizer, epoch, 0, metrics)
                self.console.print(
                    f"epoch {epoch}/{cfg.epochs}  train {cfg.loss} {train_loss:.5f}  test {cfg.loss} "
                    f"{test_loss:.5f}  {seconds:.1f}s  {row['images_per_s'] or 0:,.0f} img/s"
                )
            return metrics[-1] if metrics else {}

    # -- pieces of the loop -------------------------------------------------------
    def _optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=self.config.lr, momentum=0.9, foreach=True)
        return torch.optim.Adam(model.parameters(), lr=self.config.lr, foreach=True)

    def _load_data(self) -> tuple[ImageSet, ImageSet | None, ImageSet]:
        if self.train_set is None:
            cfg = self.config
            self.train_set, self.test_set = load_splits(
                cfg.dataset, data_dir=cfg.data_dir, channels=cfg.channels, image_size=cfg.image_size
            )
        if self.test_set is None:
            self.test_set = self.train_set
        train = self.train_set
        if self.config.normal_classes is not None:
            bad = [c for c in self.config.normal_classes if not 0 <= c < len(train.classes)]
            if bad:
                raise ConvaeError(
                    f"--normal-classes {bad[0]} is not a class of {train.name} (0..{len(train.classes) - 1})"
                )
            train = train.select_classes(self.config.normal_classes)
        train, val = split_validation(train, self.config.val_fraction or 0.0, self.config.seed)
        return train, val, self.test_set

    def _prepare_run_dir(self, resume: bool) -> dict[str, Any] | None:
        """Refuse to overwrite a finished run; on resume, adopt its config and state.

        A resumed run continues the stored run exactly; only the epoch target (and the
        device) come from the caller.
        """
        has_run = (self.run_dir / CONFIG).exists() or (self.run_dir / WEIGHTS).exists()
        if not resume:
            if has_run:
                raise RunError(f"{self.run_dir}: already holds a run; add --resume to continue it or pick a new --out")
            return None
        if not (self.run_dir / STATE).exists():
            raise RunError(f"{self.run_dir}: nothing to resume (no {STATE}); train without --resume first")
        saved = TrainConfig.from_dict(read_config(self.run_dir)["training"])
        saved = saved.resolved(named_dataset=self.train_set is None)
        self.config = dataclasses.replace(saved, epochs=self.config.epochs, device=self.config.device)
        return load_state(self.run_dir / STATE)

    def _write_config(self, train: ImageSet, test: ImageSet) -> None:
        cfg = self.config
        config = {
            "convae_version": __version__,
            "torch_version": torch.__version__,
            "python_version": sys.version.split()[0],
            "task": cfg.task,
            "dataset": {
                "spec": cfg.dataset,
                "name": train.name,
                "train_size": len(train),
                "test_size": len(test),
                "classes": list(train.classes),
            },
            "model": {
                "name": cfg.model,
                "params": _plain(cfg.model_args),
                "input_shape": list(cfg.model_shapes(train.shape)[0]),
                "out_channels": cfg.model_shapes(train.shape)[1],
                "code_shape": list(_code_shape(cfg, cfg.model_shapes(train.shape)[0])),
            },
            "training": cfg.to_dict(),
            "conventions": {"pixels": "float32 in [0, 1], NCHW", "loss_reduction": "mean per pixel"},
        }
        write_json(self.run_dir / CONFIG, config)

    def _checkpoint(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        epoch: int,
        step: int,
        metrics: list[dict[str, Any]] | None = None,
    ) -> None:
        """State first, then weights, then metrics: each file is whole on its own."""
        loss_sum, seen = self._epoch_totals() if step else (0.0, 0)
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        save_state(
            self.run_dir / STATE,
            {
                "epoch": epoch,
                "step": step,
                "model": weights,
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
                "epoch_loss_sum": float(loss_sum) if step else 0.0,
                "epoch_seen": seen if step else 0,
            },
        )
        save_weights(self.run_dir / WEIGHTS, weights, {"epoch": str(epoch), "step": str(step)})
        if metrics is not None:
            write_metrics(self.run_dir, metrics)

    def _progress_bar(self, epoch: int, total: int, start: int):
        return _EpochProgress(self.console, f"epoch {epoch + 1}/{self.config.epochs}", total, start, self.progress)


class _StopOnCtrlC:
    """Turn the first Ctrl-C into a request to stop at the next step boundary.

    A KeyboardInterrupt raised mid-step would leave a half-applied step (BatchNorm
    statistics updated, optimizer not stepped) that no checkpoint should capture. The
    second Ctrl-C falls back to the default handler and stops at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __enter__(self) -> "_StopOnCtrlC":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _EpochProgress:
    """A rich progress bar showing loss and images/s, or nothing when disabled."""

    def __init__(self, console: Console, label: str, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled and console.is_terminal
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.5f}"),
            TextColumn("{task.fields[rate]:,.0f} img/s"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not self.enabled,
        )
        self.task = self.bar.add_task(label, total=total, completed=start, loss=float("nan"), rate=0.0)
        self.last = start

    def __enter__(self) -> Callable[[float, float], None]:
        self.bar.start()

        def advance(loss: float, rate: float) -> None:
            self.bar.update(self.task, loss=loss, rate=rate, advance=1)

        return advance

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    images: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
    device: torch.device,
    corruption: Corruption | None = None,
    seed: int = 0,
) -> float:
    """Mean per-pixel loss over a uint8 image tensor, in eval mode.

    Evaluation corrupts with generators seeded by (seed, -1, batch), so every epoch is
    scored on the same corrupted test images.
    """
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for index, x in enumerate(Batches(images, max(batch_size, 256), shuffle=False, seed=0, device=device)):
        x_in = corruption(x, batch_generator(seed, -1, index, device)) if corruption is not None else x
        total += loss_fn(model(x_in), x).double() * x.shape[0]
    model.train(was_training)
    return (total / max(len(images), 1)).item()


def split_validation(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """Hold out a seeded ``fraction`` of the training split as a validation set.

    A pure function of (data, fraction, seed), so applications can recover exactly the
    images the run never trained on from its config.
    """
    count = int(round(len(train) * fraction))
    if fraction <= 0 or count == 0:
        return train, None
    if count >= len(train):
        raise ConvaeError(f"--val-fraction {fraction} leaves no training images out of {len(train)}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 7919))
    val = train.subset(order[:count].sort().values)
    val.split = "val"
    return train.subset(order[count:].sort().values), val


def _resolve_with_data(config: TrainConfig, train_set: ImageSet) -> TrainConfig:
    if config.dataset is None:
        config = dataclasses.replace(config, dataset=train_set.name)
    return config.resolved(named_dataset=False)


def _code_shape(config: TrainConfig, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
    from convae.models import code_values  # noqa: PLC0415

    model = build_model(config.model, input_shape, config.model_args).eval()
    with torch.no_grad():
        return tuple(code_values(model.encode(torch.zeros(1, *input_shape))).shape[1:])


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}))


def _as_python_rng(state: Any) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
