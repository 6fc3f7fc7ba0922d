"""Checkpoints of a training run: what state.pt holds, how it is trusted back, and an epoch's totals.

State first, then weights (then the loop writes the metrics): each file is whole on its own,
and state.pt carries the metrics rows and the epoch's running totals, so a resume after a kill
anywhere ends bit-identical to a run that never stopped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from convae.core.errors import RunError
from convae.run.files import METRICS, STATE, WEIGHTS, check_state_dict, read_metrics, save_state, save_weights
from convae.training.ranks import Ranks


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, step: int,
                    metrics: list[dict[str, Any]], sums: list[float], seen: int, trained_seconds: float = 0.0) -> None:
    """state.pt, then model.safetensors; mid-epoch (``step`` > 0) with the epoch's totals so far.
    ``trained_seconds``: the run's training time over every command so far (what --max-time counts)."""
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    save_state(
        run_dir / STATE,
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
            "trained_seconds": float(trained_seconds),
        },
    )
    save_weights(run_dir / WEIGHTS, weights, {"epoch": str(epoch), "step": str(step)})


def restore_checkpoint(path: Path, state: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a checkpoint into the model and optimizer, or refuse it in one line.

    state.pt is only trusted as far as it checks out: every field present, the weights
    matching the model of config.json in names, shapes and dtypes, before any is used.
    """
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


def resumed_rows(run_dir: Path, state: dict[str, Any], epoch: int, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """The finished epochs' rows: the checkpoint's own copy, which is rewritten over a damaged log."""
    try:
        logged = read_metrics(run_dir)
    except RunError as error:
        if "metrics" not in state:
            raise
        say(f"{error}; rewriting {METRICS} from the checkpoint's own history")
        logged = []
    return list(state["metrics"]) if "metrics" in state else [r for r in logged if r["epoch"] <= epoch]


@dataclass
class EpochTotals:
    """The running sums of one epoch (the loss, then the task's extras) and the images seen.

    A mid-epoch checkpoint stores them, so a resumed epoch reports the same train loss as one
    that never stopped; ``resumed_seen`` is what the epoch had seen before this process started.
    """

    sums: torch.Tensor
    seen: int = 0
    resumed_seen: int = 0

    @classmethod
    def fresh(cls, extra_sums: int, device: torch.device) -> "EpochTotals":
        return cls(torch.zeros(1 + extra_sums, dtype=torch.float64, device=device))

    @classmethod
    def from_state(cls, state: dict[str, Any], extra_sums: int, device: torch.device) -> "EpochTotals":
        extra = list(state.get("epoch_extra_sums") or [])
        if len(extra) != extra_sums:  # an end-of-epoch checkpoint holds no running sums
            extra = [0.0] * extra_sums
        sums = torch.tensor([state.get("epoch_loss_sum", 0.0), *extra], dtype=torch.float64, device=device)
        seen = state.get("epoch_seen", 0)
        return cls(sums, seen, seen)

    def add(self, loss: torch.Tensor, extra: torch.Tensor | None, count: int) -> None:
        self.seen += count
        self.sums[0] += loss.detach().double() * count
        if extra is not None:
            self.sums[1:] += extra.detach().double()

    def total(self, ranks: Ranks) -> tuple[list[float], int]:
        """Summed over the torchrun processes (a collective: every process calls it)."""
        return ranks.total(self.sums, self.seen)
