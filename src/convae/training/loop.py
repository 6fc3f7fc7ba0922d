"""The training loop, for every kind of run, in one file a reader can follow from top to bottom.

``Trainer.fit`` is the whole story: take the lock, resolve the config (or adopt the stored
one on ``resume``), seed everything, load the data once as uint8, build the model, then
for each epoch walk a seeded permutation of the training images in mini-batches, step the
optimizer at the scheduled rate, evaluate, and write an atomic checkpoint. Resume
restores weights, optimizer, RNG and the position inside the epoch, so a resumed run
ends bit-identical to an uninterrupted one. What differs between autoencoders and
classifiers (model, loss, evaluation, config.json) comes from a :class:`Task`.
"""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
import time
from contextlib import closing, nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console

from convae.core.atomic import write_json
from convae.core.device import default_threads, fits_on_device, pick_device, seed_everything
from convae.core.errors import ConvaeError, RunError
from convae.core.faults import fault_point
from convae.data import Batches, ImageSet
from convae.data.corrupt import batch_generator
from convae.run.config import RUNTIME, ClassifyConfig, TrainConfig, parse_loggers
from convae.run.files import (
    CONFIG,
    LOCK,
    METRICS,
    STATE,
    WEIGHTS,
    check_state_dict,
    load_state,
    read_config,
    read_metrics,
    remove_stale_temps,
    run_lock,
    save_state,
    save_weights,
    write_metrics,
)
from convae.run.splits import Splits
from convae.training.logs import CSV_FILE, TrainingLogs, write_csv
from convae.training.memory import check_step_fits
from convae.training.progress import RunProgress, StopOnCtrlC
from convae.training.ranks import Ranks
from convae.training.schedule import make_optimizer, scheduled_lr, set_lr
from convae.training.tasks import ReconstructTask, Task


class TrainingInterrupted(ConvaeError):
    """Ctrl-C during training: the checkpoint was saved and the run can be resumed."""


class NonFiniteLoss(ConvaeError):
    """The loss became NaN or Inf; the last good checkpoint was kept."""


class Trainer:
    """Train one model into one run directory.

    ``train_set``/``test_set`` may be given directly (Python use); otherwise they are
    loaded from ``config.dataset``. ``task`` builds the :class:`Task` (default: the
    autoencoder task for a TrainConfig).
    """

    def __init__(
        self,
        config: TrainConfig | ClassifyConfig,
        run_dir: str | Path,
        *,
        train_set: ImageSet | None = None,
        test_set: ImageSet | None = None,
        progress: bool = True,
        console: Console | None = None,
        task: Callable[..., Task] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if task is None and not isinstance(config, TrainConfig):
            raise ConvaeError("a classifier config trains through convae.applications.classify.train_classifier")
        self.task_type = task or ReconstructTask
        if train_set is not None and config.dataset is None:
            config = dataclasses.replace(config, dataset=train_set.name)
        self.config = config.resolved(named_dataset=train_set is None)
        self.run_dir = Path(run_dir)
        #: This process's place in a torchrun job (rank 0 of 1 otherwise); only rank 0 writes.
        self.ranks = Ranks.from_env()
        self.console = console or Console(stderr=True)
        if not self.ranks.is_main:
            self.console = Console(stderr=True, quiet=True)
        self.say = log if log is not None and self.ranks.is_main else (
            lambda line: self.console.print(line, markup=False, highlight=False, soft_wrap=True))
        self.progress = progress and self.ranks.is_main
        self.train_set, self.test_set = train_set, test_set
        self.device = pick_device(self.config.device, self.ranks.local_rank)
        self.model: torch.nn.Module | None = None
        self.task: Task | None = None
        #: True when a resumed run had already trained every epoch asked for.
        self.already_complete = False

    # -- the loop -----------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``config.epochs``; returns the task's summary (the last metrics row)."""
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
            splits = Splits(cfg, train_set=self.train_set, test_set=self.test_set)
            task = self.task = self.task_type(cfg, splits, self.device)
            images, labels = task.train_tensors()
            check_step_fits(task.build_model, task.input_shape(), max(cfg.batch_size // self.ranks.world, 1),
                            self.device, cfg.model)
            model = task.build_model().to(self.device)
            optimizer = make_optimizer(cfg.optimizer, model, cfg.lr, device=self.device, **task.optimizer_settings())
            net = self.ranks.wrap(model, self.device)
            net = torch.compile(net) if cfg.compile else net
            autocast = torch.autocast(self.device.type, torch.bfloat16, enabled=cfg.precision == "bf16")
            metrics = read_metrics(self.run_dir) if state else []
            epoch, step = 0, 0
            resumed_sums, resumed_seen = [0.0] * (1 + task.extra_sums), 0
            if state:
                self._restore(state, model, optimizer)
                epoch, step = state["epoch"], state["step"]
                resumed_seen = state.get("epoch_seen", 0)
                extra = state.get("epoch_extra_sums", [0.0] * task.extra_sums)
                resumed_sums = [state.get("epoch_loss_sum", 0.0), *extra]
                # The state's own copy of the rows wins: a kill between state.pt and
                # metrics.jsonl must neither lose nor repeat an epoch.
                metrics = list(state["metrics"]) if "metrics" in state else [r for r in metrics if r["epoch"] <= epoch]
                if self.ranks.is_main:
                    write_metrics(self.run_dir, metrics)
                    # A kill after the checkpoint but before the CSV: the spreadsheet catches up too.
                    if metrics and "csv" in parse_loggers(cfg.logger):
                        write_csv(self.run_dir / CSV_FILE, metrics)
                if epoch < cfg.epochs:
                    self.say(f"resuming {self.run_dir} at epoch {epoch + 1}, step {step}")
            else:
                self.say(task.start_line(self.run_dir)
                         + (f", on {self.ranks.world} processes" if self.ranks.world > 1 else ""))
                if self.ranks.is_main:
                    write_json(self.run_dir / CONFIG, task.config_json(model))
            self.model = model
            self.already_complete = epoch >= cfg.epochs
            if self.already_complete:
                self.say(f"{self.run_dir} is already complete: it has trained {epoch} epoch(s) and --epochs is "
                         f"{cfg.epochs}; give a larger --epochs to train further")
            if fits_on_device(images, self.device):
                images = images.to(self.device)
                labels = labels.to(self.device) if labels is not None else None
            check_every = 1 if self.device.type == "cpu" else 25

            served = task.batch_options()
            steps = len(Batches(images, cfg.batch_size, shuffle=False, seed=0, labels=labels,
                                shard=(self.ranks.rank, self.ranks.world), **served))
            logs = TrainingLogs(self.run_dir, parse_loggers(cfg.logger), epoch * steps + step,
                                enabled=self.ranks.is_main and epoch < cfg.epochs)
            with RunProgress(self.console, cfg.epochs, steps, epoch * steps + step, self.progress,
                             self.say) as progress, closing(logs):
                while epoch < cfg.epochs:
                    # The global batch is split across torchrun processes: same math as one process.
                    batches = Batches(images, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, labels=labels,
                                      start_step=step, device=self.device, shard=(self.ranks.rank, self.ranks.world),
                                      **served)
                    model.train()
                    # A resumed epoch's partial totals are global ones: rank 0 carries them.
                    if not self.ranks.is_main:
                        resumed_sums, resumed_seen = [0.0] * len(resumed_sums), 0
                    started, seen = time.perf_counter(), resumed_seen
                    sums = torch.tensor(resumed_sums, dtype=torch.float64, device=self.device)
                    resumed_sums, resumed_seen = [0.0] * len(resumed_sums), 0
                    self._epoch_totals = lambda: self.ranks.total(sums, seen)
                    with StopOnCtrlC(enabled=self.ranks.world == 1) as stop:
                        try:
                            for batch in batches:
                                x, y = batch if labels is not None else (batch, None)
                                shard_step = step * self.ranks.world + self.ranks.rank
                                generator = lambda: batch_generator(  # noqa: E731
                                    cfg.seed, epoch, shard_step, self.device)
                                loss, extra = task.loss(net, x, y, generator, autocast)
                                optimizer.zero_grad(set_to_none=True)
                                # DDP averages the processes' gradients; when a last batch splits unevenly,
                                # weigh each process's mean by its share so the step is the global mean's.
                                whole = min(cfg.batch_size, batches.items - step * cfg.batch_size)
                                share = self.ranks.world * x.shape[0] / whole
                                (loss * share if x.shape[0] != whole else loss).backward()
                                if task.schedule != "none":
                                    set_lr(optimizer, scheduled_lr(task.schedule, cfg.lr, epoch * len(batches) + step,
                                                                   cfg.epochs * len(batches)))
                                optimizer.step()
                                step += 1
                                fault_point("step")
                                seen += x.shape[0]
                                sums[0] += loss.detach().double() * x.shape[0]
                                if extra is not None:
                                    sums[1:] += extra.detach().double()
                                if step % check_every == 0 or step == len(batches):
                                    value = loss.item()
                                    if not math.isfinite(value):
                                        raise NonFiniteLoss(
                                            f"loss became {value} at epoch {epoch + 1}, step {step}; kept the last "
                                            f"good checkpoint in {self.run_dir}; try a lower --lr (now {cfg.lr})"
                                        )
                                    progress.update(epoch * len(batches) + step, value,
                                                    seen / max(time.perf_counter() - started, 1e-9))
                                    logs.step(epoch * len(batches) + step, value, optimizer.param_groups[0]["lr"],
                                              last=step == len(batches))
                                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < len(batches):
                                    self._checkpoint(model, optimizer, epoch, step, metrics)
                                if stop.requested:
                                    self._checkpoint(model, optimizer, epoch, step, metrics)
                                    raise TrainingInterrupted(
                                        f"interrupted at epoch {epoch + 1}, step {step}: checkpoint saved; "
                                        f"continue with: {task.command} --out {self.run_dir} --resume"
                                    )
                        except KeyboardInterrupt:
                            # Raised mid-step (second Ctrl-C, or not in the main thread): the model
                            # may be half-updated, so the last checkpoint on disk is the one to keep.
                            raise TrainingInterrupted(
                                f"interrupted at epoch {epoch + 1}, step {step}; kept the last checkpoint; "
                                f"continue with: {task.command} --out {self.run_dir} --resume"
                            ) from None
                    seconds = time.perf_counter() - started
                    totals, seen = self.ranks.total(sums, seen)
                    train_loss = totals[0] / max(seen, 1)
                    epoch, step = epoch + 1, 0
                    if self.ranks.is_main:
                        lr = optimizer.param_groups[0]["lr"]
                        row = task.row(model, epoch, train_loss, totals[1:], seen, seconds, lr)
                        metrics.append(row)
                    self._checkpoint(model, optimizer, epoch, 0, metrics, write_rows=True)
                    if self.ranks.is_main:
                        logs.epoch(metrics, task.preview(model) if logs.writer is not None else None)
                        self.say(task.epoch_line(row))
            last = metrics[-1] if metrics else {}
            return task.finish(model, self.run_dir, last) if self.ranks.is_main else last

    # -- pieces of the loop -------------------------------------------------------
    def _prepare_run_dir(self, resume: bool) -> dict[str, Any] | None:
        """Refuse to overwrite a finished run; on resume, adopt its config and state.

        A resumed run continues the stored run exactly; only how it is carried out (the epoch
        target, device, threads, checkpoints, logs, where the data is now: RUNTIME) comes from
        the caller. A run killed after writing config.json but before its
        first checkpoint resumes by starting over from that config (same seed, same run).
        Temporary files a killed process left behind are removed here, under the lock.
        """
        if self.ranks.is_main:  # only rank 0 writes (and holds the lock): another rank would race its writes
            remove_stale_temps(self.run_dir)
        has_run = (self.run_dir / WEIGHTS).exists() or (self.run_dir / STATE).exists()
        if not resume:
            if has_run:
                raise RunError(f"{self.run_dir}: already holds a run; add --resume to continue it or pick a new --out")
            # A start that failed before its first checkpoint (out of memory, Ctrl-C, bad data)
            # left at most a config: it never blocks the name.
            for name in (CONFIG, METRICS) if self.ranks.is_main else ():
                (self.run_dir / name).unlink(missing_ok=True)
            return None
        has_state = (self.run_dir / STATE).exists()
        if not has_state and not (self.run_dir / CONFIG).exists():
            raise RunError(f"{self.run_dir}: nothing to resume (no {STATE}); train without --resume first")
        stored = read_config(self.run_dir)
        saved = type(self.config).from_stored(stored, origin=f"{self.run_dir / CONFIG}: training").resolved(
            named_dataset=self.train_set is None)
        # How to carry the run out comes from the caller; a data_dir only when one was given.
        given = {key: getattr(self.config, key) for key in RUNTIME}
        if given["data_dir"] is None:
            del given["data_dir"]
        self.config = dataclasses.replace(saved, **given)
        if self.config.epochs > saved.epochs and self.ranks.is_main:  # --epochs extends the run: say so in config.json
            stored["training"]["epochs"] = self.config.epochs
            write_json(self.run_dir / CONFIG, stored)
        return load_state(self.run_dir / STATE) if has_state else None

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
            version, internal, gauss = state["python_rng"]
            random.setstate((version, tuple(internal), gauss))
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
        sums, seen = self._epoch_totals() if step else ([0.0], 0)  # collective under torchrun
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
                "epoch_loss_sum": float(sums[0]) if step else 0.0,
                "epoch_extra_sums": [float(v) for v in sums[1:]] if step else [],
                "epoch_seen": seen if step else 0,
                "metrics": list(metrics),
            },
        )
        save_weights(self.run_dir / WEIGHTS, weights, {"epoch": str(epoch), "step": str(step)})
        if write_rows:
            write_metrics(self.run_dir, metrics)

    def _epoch_totals(self) -> tuple[list[float], int]:
        return [0.0], 0
