"""--max-time: a run that stops cleanly at the first step after its time is up.

The loop checks the clock after every step (convae.training.loop). When the time is up it
writes the mid-epoch checkpoint, as Ctrl-C does, and this module finishes the run as a
finished one would: the evaluation, the task's own finish (a classifier's test accuracy),
and RUN/time-limit.json saying where it stopped. The limit counts the run's training time over
every command (the checkpoint carries it), not loading or setup; the same command with a larger
--max-time (or none) and --resume continues, bit-identical to a run that never stopped.
"""

from __future__ import annotations

import time
from typing import Any

from convae.core.atomic import write_json
from convae.training.checkpoints import EpochTotals

#: The record of a run --max-time stopped (removed when the run later finishes).
TIME_LIMIT = "time-limit.json"


class OutOfTime(Exception):
    """--max-time ran out after ``step``; the checkpoint is written."""

    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.step = step


def stop_on_time(trainer: Any, run: Any, epoch: int, step: int, totals: EpochTotals, seconds: float,
                 metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """--max-time ran out: the checkpoint is on disk; evaluate and finish as a finished run does.

    Stopped inside an epoch, its partial numbers are evaluated like an epoch's row, but kept
    in time-limit.json, not metrics.jsonl, so the resumed epoch is logged once, whole.
    """
    cfg, task = trainer.config, run.task
    if step:
        sums, seen = totals.total(trainer.ranks)
        lr = run.optimizer.param_groups[0]["lr"]
        evaluation = task.row(run.model, epoch + 1, sums[0] / max(seen, 1), sums[1:], seen, seconds, lr) \
            if trainer.ranks.is_main else {}
        where = f"in epoch {epoch + 1} at step {step} of {run.steps}"
    else:
        evaluation, where = (metrics[-1] if metrics else {}), f"after epoch {epoch}"
    if evaluation and trainer.ranks.is_main:
        evaluation = task.complete_row(run.model, evaluation)
    trainer.stopped_on_time = {"max_time_s": cfg.max_time, "trained_seconds": round(trainer.trained_seconds(), 2),
                               "epochs_done": epoch, "step": step, "where": where,
                               "stopped_at": time.strftime("%Y-%m-%d %H:%M:%S"), "evaluation": evaluation}
    if not trainer.ranks.is_main:
        return evaluation
    write_json(trainer.run_dir / TIME_LIMIT, trainer.stopped_on_time)
    trainer.say(f"stopped on time {where}: trained {trainer.trained_seconds():.1f} s of --max-time "
                f"{cfg.max_time:g} s; checkpoint saved; continue with a larger --max-time (or none) plus --resume")
    return task.finish(run.model, trainer.run_dir, {**evaluation, "stopped_on_time": True})
