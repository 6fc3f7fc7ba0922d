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
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from convae import __version__
from convae.data import Batches, ImageSet, dataset_names, default_dataset, load_splits
from convae.data.corrupt import Corruption, batch_generator, parse_corruption
from convae.errors import ConvaeError, RunError
from convae.faults import fault_point
from convae.models import build_model, get_preset, resolve_params
from convae.models.heads import canonical_color_output
from convae.runs import (
    CONFIG,
    LOCK,
    STATE,
    WEIGHTS,
    check_state_dict,
    config_from_dict,
    load_state,
    read_config,
    read_metrics,
    remove_stale_temps,
    run_lock,
    save_state,
    save_weights,
    write_json,
    write_metrics,
)

LOSSES = ("mse", "bce", "l1")
TASKS = ("reconstruct", "denoise", "colorize")
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("none", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16")


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
        _check(config.lr_schedule in LR_SCHEDULES,
               f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {config.lr_schedule!r}")
        _check(config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}")
        _check(config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}")
        _check(config.lr > 0 and math.isfinite(config.lr), f"--lr must be a positive number, got {config.lr}")
        _check(config.task in TASKS, f"--task must be one of {', '.join(TASKS)}, got {config.task!r}")
        if config.task == "denoise" and config.noise is None:
            config.noise = "gaussian:0.5"
        if config.task == "colorize":
            _check(config.noise in (None, "gray"), "--task colorize takes no --noise (its input is the gray image)")
            config.noise = "gray"
            try:
                config.color_output = canonical_color_output(config.color_output or "chroma")
            except ConvaeError as error:
                raise ConvaeError(f"--color-output: {error}") from None
        else:
            _check(config.color_output is None, f"--color-output is for --task colorize, not {config.task}")
        if config.noise is not None:
            config.noise = str(parse_corruption(config.noise))
        if config.val_fraction is None:
            # Anomaly thresholds are fitted on held-out normal images, so keep some by default.
            config.val_fraction = 0.1 if config.normal_classes is not None else 0.0
        _check(0.0 <= config.val_fraction < 1.0, f"--val-fraction must be in [0, 1), got {config.val_fraction}")
        _check(config.checkpoint_every >= 0, "--checkpoint-every must be 0 (per epoch) or a step count")
        _check(config.precision in PRECISIONS,
               f"--precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
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


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """auto: CUDA when present, else CPU. Under torchrun, plain "cuda" means this process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConvaeError(f"--device {name}: CUDA is not available on this machine")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)


def loss_function(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean per pixel, so numbers compare across image sizes and with the references."""
    return {"mse": F.mse_loss, "l1": F.l1_loss, "bce": F.binary_cross_entropy}[name]


def scheduled_lr(schedule: str, lr: float, position: int, total: int) -> float:
    """The learning rate for global step ``position`` of ``total`` under ``schedule``.

    "cosine" anneals from lr to 0; "onecycle" follows torch's OneCycleLR defaults (30 %
    cosine warm-up from lr/25, then cosine down to lr/25e4). A pure function of the
    position, so a resumed run sees exactly the rates the uninterrupted one saw.
    """
    progress = min(max(position / max(total, 1), 0.0), 1.0)

    def cos_between(start: float, end: float, t: float) -> float:
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))

    if schedule == "cosine":
        return cos_between(lr, 0.0, progress)
    if schedule == "onecycle":
        warm = 0.3
        if progress < warm:
            return cos_between(lr / 25, lr, progress / warm)
        return cos_between(lr, lr / 25e4, (progress - warm) / (1 - warm))
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


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
        #: This process's place in a torchrun job (rank 0 of 1 otherwise); only rank 0 writes.
        self.ranks = Ranks.from_env()
        self.console = console or Console(stderr=True)
        if not self.ranks.is_main:
            self.console = Console(stderr=True, quiet=True)
        self.progress = progress and self.ranks.is_main
        self.train_set, self.test_set = train_set, test_set
        self.device = pick_device(self.config.device, self.ranks.local_rank)
        self.model: torch.nn.Module | None = None
        self._epoch_totals: Callable[[], tuple[float, int]] = lambda: (0.0, 0)

    # -- the loop -----------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``config.epochs`` and return the last metrics row."""
        created = not self.run_dir.exists() and self.ranks.is_main
        self.ranks.start(self.device)
        try:
            last = self._fit(resume)
            # Rank 0 still evaluates and writes the last checkpoint after the others are done;
            # tearing the group down under it aborts gloo ("terminate called without an active
            # exception"), so every process waits here first.
            self.ranks.barrier()
            return last
        finally:
            self.ranks.stop()
            # A run that failed before writing anything leaves no empty directory behind.
            if created and self.run_dir.is_dir() and {p.name for p in self.run_dir.iterdir()} <= {LOCK}:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def _fit(self, resume: bool) -> dict[str, Any]:
        with run_lock(self.run_dir) if self.ranks.is_main else nullcontext():
            state = self._prepare_run_dir(resume)
            self.ranks.barrier()  # every process has read the run directory before rank 0 writes to it
            cfg = self.config
            torch.set_num_threads(cfg.threads or default_threads(self.ranks.local_world))
            # Tiny weights decay into denormals, which slow CPU arithmetic many times over.
            torch.set_flush_denormal(True)
            seed_everything(cfg.seed, cfg.deterministic)
            train, val, test = self._load_data()
            input_shape, out_channels = cfg.model_shapes(train.shape)
            model = build_model(cfg.model, input_shape, cfg.model_args, out_channels, cfg.color_output).to(self.device)
            corruption = cfg.corruption()
            optimizer = self._optimizer(model)
            net = self.ranks.wrap(model, self.device)
            net = torch.compile(net) if cfg.compile else net
            autocast = torch.autocast(self.device.type, torch.bfloat16, enabled=cfg.precision == "bf16")
            metrics = read_metrics(self.run_dir) if state else []
            epoch, step = 0, 0
            resumed_sum, resumed_seen = 0.0, 0
            if state:
                self._restore(state, model, optimizer)
                epoch, step = state["epoch"], state["step"]
                resumed_sum, resumed_seen = state.get("epoch_loss_sum", 0.0), state.get("epoch_seen", 0)
                # The state's own copy of the rows wins: a kill between state.pt and
                # metrics.jsonl must neither lose nor repeat an epoch.
                metrics = list(state["metrics"]) if "metrics" in state else [r for r in metrics if r["epoch"] <= epoch]
                if self.ranks.is_main:
                    write_metrics(self.run_dir, metrics)
                self.console.print(f"resuming {self.run_dir} at epoch {epoch + 1}, step {step}")
            else:
                self.console.print(
                    f"training [bold]{cfg.model}[/] on [bold]{cfg.dataset}[/] ({len(train):,} train / "
                    f"{len(test):,} test images, {'×'.join(map(str, train.shape))}) for {cfg.epochs} epochs "
                    f"(batch {cfg.batch_size}, lr {cfg.lr}, loss {cfg.loss}) into {self.run_dir}"
                    + (f", on {self.ranks.world} processes" if self.ranks.world > 1 else ""),
                    soft_wrap=True,
                )
                self._write_config(train, test)
            self.model = model
            loss_fn = loss_function(cfg.loss)
            images = train.images.to(self.device) if fits_on_device(train.images, self.device) else train.images
            check_every = 1 if self.device.type == "cpu" else 25

            while epoch < cfg.epochs:
                # The global batch is split across torchrun processes: same math as one process.
                batches = Batches(images, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch,
                                  start_step=step, device=self.device, shard=(self.ranks.rank, self.ranks.world))
                model.train()
                # A resumed epoch's partial totals are global ones: rank 0 carries them.
                if not self.ranks.is_main:
                    resumed_sum, resumed_seen = 0.0, 0
                started, seen = time.perf_counter(), resumed_seen
                loss_sum = torch.full((), resumed_sum, dtype=torch.float64, device=self.device)
                resumed_sum, resumed_seen = 0.0, 0
                self._epoch_totals = lambda: self.ranks.total(loss_sum, seen)
                with self._progress_bar(epoch, len(batches), step) as advance, \
                        _StopOnCtrlC(enabled=self.ranks.world == 1) as stop:
                    try:
                        for x in batches:
                            if corruption is not None:
                                shard_step = step * self.ranks.world + self.ranks.rank
                                x_in = corruption(x, batch_generator(cfg.seed, epoch, shard_step, self.device))
                            else:
                                x_in = x
                            with autocast:
                                output = net(x_in)
                            loss = loss_fn(output.float(), x)
                            optimizer.zero_grad(set_to_none=True)
                            loss.backward()
                            if cfg.lr_schedule != "none":
                                set_lr(optimizer, scheduled_lr(cfg.lr_schedule, cfg.lr, epoch * len(batches) + step,
                                                               cfg.epochs * len(batches)))
                            optimizer.step()
                            step += 1
                            fault_point("step")
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
                                self._checkpoint(model, optimizer, epoch, step, metrics)
                            if stop.requested:
                                self._checkpoint(model, optimizer, epoch, step, metrics)
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
                total_loss, seen = self.ranks.total(loss_sum, seen)
                train_loss = total_loss / max(seen, 1)
                test_loss = (evaluate_loss(model, test.images, loss_fn, cfg.batch_size, self.device, corruption, cfg.seed)
                             if self.ranks.is_main else math.nan)
                epoch, step = epoch + 1, 0
                row = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "test_loss": test_loss,
                    **({"val_loss": evaluate_loss(model, val.images, loss_fn, cfg.batch_size, self.device,
                                                  corruption, cfg.seed)} if val is not None and self.ranks.is_main
                       else {}),
                    "seconds": round(seconds, 4),
                    "images_per_s": round(seen / seconds, 1) if seconds > 0 else None,
                    "loss": cfg.loss,
                }
                metrics.append(row)
                self._checkpoint(model, optimizer, epoch, 0, metrics, write_rows=True)
                self.console.print(
                    f"epoch {epoch}/{cfg.epochs}  train {cfg.loss} {train_loss:.5f}  test {cfg.loss} "
                    f"{test_loss:.5f}  {seconds:.1f}s  {row['images_per_s'] or 0:,.0f} img/s"
                )
            return metrics[-1] if metrics else {}

    # -- pieces of the loop -------------------------------------------------------
    def _optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=self.config.lr, momentum=0.9, foreach=True)
        # The fused kernel does the whole update in one pass per tensor (measured ~1-2 ms a
        # step faster than foreach for the fc preset on CPU; see docs/performance.md).
        return torch.optim.Adam(model.parameters(), lr=self.config.lr, fused=self.device.type in ("cpu", "cuda"))

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
        device) come from the caller. A run killed after writing config.json but before its
        first checkpoint resumes by starting over from that config (same seed, same run).
        Temporary files a killed process left behind are removed here, under the lock.
        """
        remove_stale_temps(self.run_dir)
        has_run = (self.run_dir / CONFIG).exists() or (self.run_dir / WEIGHTS).exists()
        if not resume:
            if has_run:
                raise RunError(f"{self.run_dir}: already holds a run; add --resume to continue it or pick a new --out")
            return None
        has_state = (self.run_dir / STATE).exists()
        if not has_state and not (self.run_dir / CONFIG).exists():
            raise RunError(f"{self.run_dir}: nothing to resume (no {STATE}); train without --resume first")
        stored = read_config(self.run_dir)
        saved = TrainConfig.from_dict(stored["training"])
        if saved.task == "colorize" and saved.color_output is None:  # a run from before the chroma head
            saved.color_output = stored.get("model", {}).get("color_output") or "rgb"
        saved = saved.resolved(named_dataset=self.train_set is None)
        self.config = dataclasses.replace(saved, epochs=self.config.epochs, device=self.config.device)
        return load_state(self.run_dir / STATE) if has_state else None

    def _write_config(self, train: ImageSet, test: ImageSet) -> None:
        if not self.ranks.is_main:
            return
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
                "color_output": cfg.color_output,
                "code_shape": list(_code_shape(cfg, cfg.model_shapes(train.shape)[0])),
            },
            "training": cfg.to_dict(),
            "conventions": {"pixels": "float32 in [0, 1], NCHW", "loss_reduction": "mean per pixel"},
        }
        write_json(self.run_dir / CONFIG, config)

    def _restore(self, state: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Load a checkpoint into the model and optimizer, or refuse it in one line.

        state.pt is only trusted as far as it checks out: every field present, the weights
        matching the model of config.json in names, shapes and dtypes, before any is used.
        """
        path = self.run_dir / STATE
        keys = ("epoch", "step", "model", "optimizer", "torch_rng", "python_rng")
        if not isinstance(state, dict) or any(key not in state for key in keys):
            raise RunError(f"{path}: not a convae training state (missing fields); delete it to start over")
        if not isinstance(state["model"], dict):
            raise RunError(f"{path}: its 'model' entry is not a set of weights")
        check_state_dict(path, model, state["model"])
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            random.setstate(_as_python_rng(state["python_rng"]))
        except (RuntimeError, ValueError, TypeError, KeyError) as error:
            raise RunError(f"{path}: does not fit this run ({str(error).strip().splitlines()[0]})") from None

    def _checkpoint(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        epoch: int,
        step: int,
        metrics: list[dict[str, Any]],
        write_rows: bool = False,
    ) -> None:
        """State first, then weights, then metrics: each file is whole on its own.

        state.pt also carries the metrics rows, so resuming after a kill anywhere in here
        rebuilds metrics.jsonl with every finished epoch exactly once.
        """
        loss_sum, seen = self._epoch_totals() if step else (0.0, 0)  # collective under torchrun
        if not self.ranks.is_main:
            return
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
                "metrics": list(metrics),
            },
        )
        save_weights(self.run_dir / WEIGHTS, weights, {"epoch": str(epoch), "step": str(step)})
        if write_rows:
            write_metrics(self.run_dir, metrics)

    def _progress_bar(self, epoch: int, total: int, start: int):
        return _EpochProgress(self.console, f"epoch {epoch + 1}/{self.config.epochs}", total, start, self.progress)


class _StopOnCtrlC:
    """Turn the first Ctrl-C into a request to stop at the next step boundary.

    A KeyboardInterrupt raised mid-step would leave a half-applied step (BatchNorm
    statistics updated, optimizer not stepped) that no checkpoint should capture. The
    second Ctrl-C falls back to the default handler and stops at once.
    """

    def __init__(self, enabled: bool = True) -> None:
        # Under torchrun the processes would stop at different steps and wait for each
        # other forever, so there Ctrl-C stops at once and the last checkpoint is kept.
        self.enabled = enabled
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __enter__(self) -> "_StopOnCtrlC":
        if self.enabled and threading.current_thread() is threading.main_thread():
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
        fault_point("evaluate")
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


def default_threads(processes: int = 1) -> int:
    """The cores this process may use, shared among ``processes`` training processes on this
    machine; an explicit ``OMP_NUM_THREADS`` (torchrun sets 1 per process by default) wins."""
    explicit = os.environ.get("OMP_NUM_THREADS", "")
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, processes))


def fits_on_device(images: torch.Tensor, device: torch.device) -> bool:
    """Keep a uint8 dataset on the GPU when it takes under a quarter of the free memory."""
    if device.type != "cuda":
        return False
    free, _total = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() < free // 4


@dataclass
class Ranks:
    """This process's place in a ``torchrun`` job, read from the variables torchrun sets.

    Outside torchrun it is rank 0 of 1 and every method is a no-op, so the single-process
    loop is the same code. Under torchrun: gloo on CPU, nccl on GPU; each process trains on
    its slice of every global batch and DistributedDataParallel averages the gradients,
    which is the same update one process would make on the whole batch.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    owns_group: bool = False

    @classmethod
    def from_env(cls) -> "Ranks":
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(int(env.get("RANK", "0")), world, int(env.get("LOCAL_RANK", "0")),
                   int(env.get("LOCAL_WORLD_SIZE", str(world))))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        if self.world > 1 and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owns_group = True

    def stop(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module to train through: DistributedDataParallel under torchrun, else the model."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

        if device.type == "cuda":
            # BatchNorm over the global batch, as one process computes it (SyncBatchNorm is
            # CUDA-only; on CPU each process normalizes by its own slice's statistics). The
            # conversion swaps the layers in place and keeps their parameters and buffers.
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def total(self, loss_sum: torch.Tensor, seen: int) -> tuple[float, int]:
        """(summed loss, images seen) over all processes."""
        if self.world == 1:
            return loss_sum.item(), seen
        both = torch.stack([loss_sum.double(), torch.tensor(float(seen), dtype=torch.float64, device=loss_sum.device)])
        dist.all_reduce(both)
        return both[0].item(), int(both[1].item())
