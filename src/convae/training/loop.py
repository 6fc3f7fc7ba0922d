"""The training loop, for every kind of run, in one file a reader can follow from top to bottom.

``Trainer._fit`` is the whole story, in named phases: take the lock and read the run
directory (``_prepare_run_dir``), ``_setup`` (seeds, the data once as uint8, the model and its
optimizer), ``_restore_or_start``, then per epoch ``_epoch`` (a seeded permutation of the
training images in mini-batches, each a ``_step`` at the scheduled rate), and
``_end_of_epoch`` (evaluate, checkpoint atomically, log). Resume restores weights, optimizer,
RNG, the position inside the epoch and its running totals (training/checkpoints.py), so a
resumed run ends bit-identical to an uninterrupted one. What differs between autoencoders
and classifiers (model, loss, evaluation, config.json) comes from a :class:`Task`.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console

from convae.core.atomic import write_json
from convae.core.device import default_threads, fits_on_device, pick_device, resolve_precision, seed_everything
from convae.core.errors import ConvaeError, RunError
from convae.core.faults import fault_point
from convae.data import Batches, ImageSet
from convae.run.config import RUNTIME, ClassifyConfig, TrainConfig, parse_loggers
from convae.run.files import (
    BEST,
    CONFIG,
    LOCK,
    METRICS,
    STATE,
    WEIGHTS,
    load_state,
    read_config,
    remove_stale_temps,
    run_lock,
    write_metrics,
)
from convae.run.splits import Splits
from convae.training.checkpoints import EpochTotals, restore_checkpoint, resumed_rows, save_checkpoint
from convae.training.kinds import task_for
from convae.training.logs import CSV_FILE, TrainingLogs, write_csv
from convae.training.memory import check_step_fits
from convae.training.progress import RunProgress, StopOnCtrlC
from convae.training.ranks import Ranks
from convae.training.schedule import make_optimizer, scheduled_lr, set_lr
from convae.training.tasks import StepRandom, Task
from convae.training.time_limit import TIME_LIMIT, OutOfTime, stop_on_time


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
        if train_set is not None and config.dataset is None:
            config = dataclasses.replace(config, dataset=train_set.name)
        self.config = config.resolved(named_dataset=train_set is None)
        self.task_type = task or task_for(self.config)  # type: ignore[arg-type]
        self.run_dir = Path(run_dir)
        #: This process's place in a torchrun job (rank 0 of 1 otherwise); only rank 0 writes.
        self.ranks = Ranks.from_env()
        self.console = console or Console(stderr=True, emoji=False)
        if not self.ranks.is_main:
            self.console = Console(stderr=True, quiet=True)
        self.say = log if log is not None and self.ranks.is_main else (
            lambda line: self.console.print(line, markup=False, highlight=False, soft_wrap=True))
        self.progress = progress and self.ranks.is_main
        self.train_set, self.test_set = train_set, test_set
        self.device = pick_device(self.config.device, self.ranks.local_rank)
        # --precision auto is settled here, for this device, so config.json keeps what ran.
        self.config = dataclasses.replace(self.config, precision=resolve_precision(self.config.precision,
                                                                                   self.device))
        self.model: torch.nn.Module | None = None
        self.task: Task | None = None
        #: True when a resumed run had already trained every epoch asked for.
        self.already_complete = False
        #: What --max-time stopped (time-limit.json), or None when the run was not stopped on time.
        self.stopped_on_time: dict[str, Any] | None = None
        #: Training seconds before this command (from the checkpoint), and when this one's began.
        self.trained_before, self.clock = 0.0, time.monotonic()
        if self.config.max_time and self.ranks.world > 1:
            raise ConvaeError("--max-time stops one process at its own clock; under torchrun give --epochs instead")

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
            run = self._setup()
            epoch, step, metrics, totals = self._restore_or_start(state, run)
            # --max-time counts the run's training time over every command, not loading or setup.
            self.trained_before = float((state or {}).get("trained_seconds", 0.0))
            self.clock = time.monotonic()
            logs = TrainingLogs(self.run_dir, parse_loggers(cfg.logger), epoch * run.steps + step,
                                enabled=self.ranks.is_main and epoch < cfg.epochs)
            with RunProgress(self.console, cfg.epochs, run.steps, epoch * run.steps + step, self.progress,
                             self.say) as progress, closing(logs):
                while epoch < cfg.epochs:
                    if cfg.max_time and self.trained_before >= cfg.max_time:  # spent by earlier commands
                        return stop_on_time(self, run, epoch, step, totals, 0.0, metrics)
                    started = time.perf_counter()
                    try:
                        self._epoch(run, epoch, step, totals, metrics, progress, logs)
                    except OutOfTime as stop:
                        return stop_on_time(self, run, epoch, stop.step, totals, time.perf_counter() - started, metrics)
                    epoch, step = epoch + 1, 0
                    self._end_of_epoch(run, epoch, totals, time.perf_counter() - started, metrics, logs)
                    totals = EpochTotals.fresh(run.task.extra_sums, self.device)
                    if epoch < cfg.epochs and self._out_of_time():
                        return stop_on_time(self, run, epoch, 0, totals, 0.0, metrics)
            if self.ranks.is_main:
                (self.run_dir / TIME_LIMIT).unlink(missing_ok=True)  # a stop on time before this is history
            last = metrics[-1] if metrics else {}
            return run.task.finish(run.model, self.run_dir, last) if self.ranks.is_main else last

    def trained_seconds(self) -> float:
        return self.trained_before + time.monotonic() - self.clock

    def _out_of_time(self) -> bool:
        return bool(self.config.max_time) and self.trained_seconds() >= self.config.max_time

    # -- the phases -------------------------------------------------------------------
    def _setup(self) -> "_Setup":
        """Threads and seeds, the data once as uint8, the model, its optimizer and how steps run."""
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
        model = self.model = task.build_model().to(self.device)
        optimizer = make_optimizer(cfg.optimizer, model, cfg.lr, device=self.device, **task.optimizer_settings())
        net = self.ranks.wrap(model, self.device)
        net = torch.compile(net) if cfg.compile else net
        if fits_on_device(images, self.device):
            images = images.to(self.device)
            labels = labels.to(self.device) if labels is not None else None
        served = task.batch_options()
        steps = len(Batches(images, cfg.batch_size, shuffle=False, seed=0, labels=labels,
                            shard=(self.ranks.rank, self.ranks.world), **served))
        return _Setup(task, model, optimizer, net, images, labels, served, steps,
                      torch.autocast(self.device.type, torch.bfloat16, enabled=cfg.precision == "bf16"))

    def _restore_or_start(self, state: dict[str, Any] | None,
                          run: "_Setup") -> tuple[int, int, list[dict[str, Any]], "EpochTotals"]:
        """(epoch, step, metrics rows, the epoch's running totals): from the checkpoint, or from zero."""
        cfg, task = self.config, run.task
        epoch, step, metrics = 0, 0, []
        totals = EpochTotals.fresh(task.extra_sums, self.device)
        if state:
            restore_checkpoint(self.run_dir / STATE, state, run.model, run.optimizer)
            epoch, step = state["epoch"], state["step"]
            if self.ranks.is_main:  # a resumed epoch's partial totals are global ones: rank 0 carries them
                totals = EpochTotals.from_state(state, task.extra_sums, self.device)
            # The state's own copy of the rows wins: a kill between state.pt and
            # metrics.jsonl must neither lose nor repeat an epoch.
            metrics = resumed_rows(self.run_dir, state, epoch, self.say)
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
                write_json(self.run_dir / CONFIG, task.config_json(run.model))
        self.already_complete = epoch >= cfg.epochs
        if self.already_complete:
            self.say(f"{self.run_dir} is already complete: it has trained {epoch} epoch(s) and --epochs is "
                     f"{cfg.epochs}; give a larger --epochs to train further")
        return epoch, step, metrics, totals

    def _epoch(self, run: "_Setup", epoch: int, step: int, totals: "EpochTotals", metrics: list[dict[str, Any]],
               progress: RunProgress, logs: TrainingLogs) -> None:
        """One pass over a seeded permutation of the training images, from ``step`` on."""
        cfg = self.config
        # The global batch is split across torchrun processes: same math as one process.
        batches = Batches(run.images, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, labels=run.labels,
                          start_step=step, device=self.device, shard=(self.ranks.rank, self.ranks.world), **run.served)
        run.model.train()
        started = time.perf_counter()
        with StopOnCtrlC(enabled=self.ranks.world == 1) as stop:
            try:
                for batch in batches:
                    x, y = batch if run.labels is not None else (batch, None)
                    loss, extra = self._step(run, batches, epoch, step, x, y)
                    step += 1
                    fault_point("step")
                    totals.add(loss, extra, x.shape[0])
                    if step % self.check_every == 0 or step == len(batches):
                        self._report_step(loss, epoch, step, len(batches), totals, started, run, progress, logs)
                    if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < len(batches):
                        self._checkpoint(run.model, run.optimizer, epoch, step, metrics, totals)
                    if self._out_of_time() and step < len(batches):
                        self._checkpoint(run.model, run.optimizer, epoch, step, metrics, totals)
                        raise OutOfTime(step)
                    if stop.requested:
                        self._checkpoint(run.model, run.optimizer, epoch, step, metrics, totals)
                        raise TrainingInterrupted(
                            f"interrupted at epoch {epoch + 1}, step {step}: checkpoint saved; "
                            f"continue with: {run.task.command} --out {self.run_dir} --resume"
                        )
            except KeyboardInterrupt:
                # Raised mid-step (second Ctrl-C, or not in the main thread): the model
                # may be half-updated, so the last checkpoint on disk is the one to keep.
                raise TrainingInterrupted(
                    f"interrupted at epoch {epoch + 1}, step {step}; kept the last checkpoint; "
                    f"continue with: {run.task.command} --out {self.run_dir} --resume"
                ) from None

    def _step(self, run: "_Setup", batches: Batches, epoch: int, step: int, x: torch.Tensor,
              y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimizer step on one batch at the scheduled rate; the batch's loss and task extras."""
        cfg, ranks = self.config, self.ranks
        generator = StepRandom(cfg.seed, epoch, step, step * ranks.world + ranks.rank, batches.shard_start(step),
                               self.device)
        loss, extra = run.task.loss(run.net, x, y, generator, run.autocast)
        run.optimizer.zero_grad(set_to_none=True)
        # DDP averages the processes' gradients; when a last batch splits unevenly,
        # weigh each process's mean by its share so the step is the global mean's.
        whole = batches.global_length(step)
        share = ranks.world * x.shape[0] / whole
        (loss * share if x.shape[0] != whole else loss).backward()
        if run.task.schedule != "none":
            set_lr(run.optimizer, scheduled_lr(run.task.schedule, cfg.lr, epoch * len(batches) + step,
                                               cfg.epochs * len(batches)))
        run.optimizer.step()
        return loss, extra

    def _report_step(self, loss: torch.Tensor, epoch: int, step: int, steps: int, totals: "EpochTotals",
                     started: float, run: "_Setup", progress: RunProgress, logs: TrainingLogs) -> None:
        """Check the loss is finite, move the progress bar and log the step."""
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"loss became {value} at epoch {epoch + 1}, step {step}; kept the last "
                f"good checkpoint in {self.run_dir}; try a lower --lr (now {self.config.lr})"
            )
        done = epoch * steps + step
        progress.update(done, value, (totals.seen - totals.resumed_seen) / max(time.perf_counter() - started, 1e-9))
        logs.step(done, value, run.optimizer.param_groups[0]["lr"], last=step == steps)

    def _end_of_epoch(self, run: "_Setup", epoch: int, totals: "EpochTotals", seconds: float,
                      metrics: list[dict[str, Any]], logs: TrainingLogs) -> None:
        """The epoch's row (train loss, evaluation), a checkpoint at its end, the logs."""
        sums, seen = totals.total(self.ranks)
        if self.ranks.is_main:
            lr = run.optimizer.param_groups[0]["lr"]
            metrics.append(run.task.row(run.model, epoch, sums[0] / max(seen, 1), sums[1:], seen, seconds, lr))
            run.task.remember(run.model, self.run_dir, metrics)  # before the checkpoint: a resume redoes both
        self._checkpoint(run.model, run.optimizer, epoch, 0, metrics, None, write_rows=True)
        if self.ranks.is_main:
            logs.epoch(metrics, run.task.preview(run.model) if logs.writer is not None else None)
            self.say(run.task.epoch_line(metrics[-1]))

    @property
    def check_every(self) -> int:
        """How often the loss is read back (a GPU sync): every step on a CPU, every 25th on a GPU."""
        return 1 if self.device.type == "cpu" else 25

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
            for name in (CONFIG, METRICS, BEST) if self.ranks.is_main else ():
                (self.run_dir / name).unlink(missing_ok=True)
            return None
        has_state = (self.run_dir / STATE).exists()
        if not has_state and not (self.run_dir / CONFIG).exists():
            raise RunError(f"{self.run_dir}: nothing to resume (no {STATE}); train without --resume first")
        stored = read_config(self.run_dir)
        saved = type(self.config).from_stored(stored, origin=str(self.run_dir / CONFIG)).resolved(
            named_dataset=self.train_set is None)
        # How to carry the run out comes from the caller; a data_dir only when one was given.
        given = {key: getattr(self.config, key) for key in RUNTIME}
        if given["data_dir"] is None:
            del given["data_dir"]
        self.config = dataclasses.replace(saved, **given)
        schedule = getattr(saved, "lr_schedule", None) or "none"
        if self.config.epochs != saved.epochs and schedule != "none":
            # The rate at each step is a function of the whole run's length: another --epochs
            # would change every step still to come, and so what the run computes.
            raise RunError(f"{self.run_dir}: --epochs {self.config.epochs} (this run: {saved.epochs}) would change "
                           f"its {schedule} learning-rate schedule, which spans the whole run; resume without "
                           "--epochs, or train a new run into another --out")
        if self.config.epochs > saved.epochs and self.ranks.is_main:  # --epochs extends the run: say so in config.json
            stored["training"]["epochs"] = self.config.epochs
            write_json(self.run_dir / CONFIG, stored)
        return load_state(self.run_dir / STATE) if has_state else None

    def _checkpoint(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        epoch: int,
        step: int,
        metrics: list[dict[str, Any]],
        totals: "EpochTotals | None",
        write_rows: bool = False,
    ) -> None:
        """State first, then weights, then metrics: each file is whole on its own.

        state.pt also carries the metrics rows, so resuming after a kill anywhere in here
        rebuilds metrics.jsonl with every finished epoch exactly once.
        """
        sums, seen = totals.total(self.ranks) if step and totals is not None else ([0.0], 0)  # collective
        if not self.ranks.is_main:
            return
        save_checkpoint(self.run_dir, model, optimizer, epoch, step, metrics, sums, seen, self.trained_seconds())
        if write_rows:
            write_metrics(self.run_dir, metrics)


@dataclass
class _Setup:
    """What every phase of one training run works with."""

    task: Task
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    net: torch.nn.Module  # the model as trained: wrapped for DDP, compiled
    images: torch.Tensor
    labels: torch.Tensor | None
    served: dict[str, Any]  # how Batches serves them (patches)
    steps: int  # per epoch, on this process
    autocast: Any
