"""An inspect run whose held-out check collapsed ends on its best epoch, not on its last one.

Why: with a few dozen good parts, a long run can memorise them. Measured on the benchmark's
grass and gravel sets after 190 and 182 epochs (bf16 runs of 2026-12-07, docs/inspect.md,
"Keeping the best epoch"): the reconstructive network redrew the training parts with 2.4× and
3.5× less error than held-out good parts, so the discriminator, which learned to mark where
input and reconstruction differ, marked much of every unseen part (mean defect probability
0.46 on held-out good parts against 0.08–0.11 on training parts). The per-epoch check on
held-out good parts with simulated defects saw it: its pixel AUROC peaked at 0.79 and 0.94,
then ended at 0.62 and 0.61. No test part is used: the check paints held-out good parts only.

How: after each epoch whose check is the best so far, its weights go to ``best.safetensors``
(before that epoch's checkpoint, so a kill in between is redone by the resumed epoch, which
computes the same weights). When the run finishes or stops on time, ``model.safetensors``
becomes those weights if the last evaluation's check has fallen more than ``MARGIN`` below
theirs; ``state.pt`` keeps the last weights, so ``--resume`` trains on from where training
was, not from the kept epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from convae.core.errors import RunError
from convae.run.files import BEST, WEIGHTS, load_weights, save_weights, weights_metadata

#: The metrics row's field that decides: pixel AUROC of simulated defects on held-out good parts.
CHECK = "val_pixel_auroc"
#: The run ends on the kept epoch only when the last evaluation's check is this far below it. Near
#: the end of a run that did not memorise its parts the check still moves by about this much
#: from one epoch to the next (it swung 0.79–0.95 over moon's last 20 epochs; the kept epoch
#: beat the last by 0.006 and 0.01 on brick and tissue), and the earlier epoch is less trained:
#: kept on any gain, hubble's validation run ended on epoch 53 of 67 and lost 0.018 image AUROC
#: (docs/inspect.md, "Keeping the best epoch"). Memorising runs fell by 0.17 and 0.33.
MARGIN = 0.05
#: model.safetensors' metadata key saying it holds a kept epoch, whose value is the last evaluation's
#: check it was kept over (a later checkpoint writes the file without it).
KEPT = "kept_over"


def _value(row: dict[str, Any]) -> float | None:
    value = row.get(CHECK)
    return float(value) if isinstance(value, (int, float)) else None


def remember_if_best(run_dir: Path, model: torch.nn.Module, rows: list[dict[str, Any]]) -> bool:
    """Write the model to best.safetensors when the newest row's check beats every earlier row's."""
    value = _value(rows[-1]) if rows else None
    if value is None:
        return False
    earlier = [v for v in (_value(row) for row in rows[:-1]) if v is not None]
    if earlier and value <= max(earlier):
        return False
    save_weights(Path(run_dir) / BEST, model.state_dict(), {"epoch": str(rows[-1]["epoch"]), CHECK: repr(value)})
    return True


def kept(run_dir: Path) -> tuple[int, float] | None:
    """(epoch, check) of the weights in best.safetensors, or None when there are none."""
    path = Path(run_dir) / BEST
    if not path.is_file():
        return None
    meta = weights_metadata(path)
    try:
        return int(meta["epoch"]), float(meta[CHECK])
    except (KeyError, ValueError):
        raise RunError(f"{path}: not a kept epoch's weights (no epoch and {CHECK} in its metadata); "
                       "delete it, and the run keeps its last weights") from None


def ends_on_kept_epoch(run_dir: Path) -> tuple[int, float, float] | None:
    """(epoch, its check, the last evaluation's check) when model.safetensors holds a kept epoch, else None."""
    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        return None
    over = weights_metadata(path).get(KEPT)
    best = kept(run_dir) if over is not None else None
    return (*best, float(over)) if best else None


def settle_on_best(run_dir: Path, model: torch.nn.Module, last: dict[str, Any]) -> dict[str, Any] | None:
    """Make model.safetensors (and ``model``) the kept epoch's weights when ``last``'s check fell ``MARGIN`` below.

    Returns what was done, for the run's summary and its one line, or None when the last weights stay.
    """
    best, final = kept(run_dir), _value(last)
    if best is None or final is None or final > best[1] - MARGIN:
        return None
    weights = load_weights(Path(run_dir) / BEST)
    model.load_state_dict(weights)
    save_weights(Path(run_dir) / WEIGHTS, weights, {"epoch": str(best[0]), "step": "0", KEPT: repr(final)})
    return {"kept_epoch": best[0], "kept_check": best[1], "last_check": final}
