"""An inspect run whose held-out check collapsed ends on its best epoch, not on its last one.

Why: with a few dozen good parts, a long run can memorise them. Measured on the benchmark's
grass and gravel sets after 190 and 182 epochs (bf16 runs of 2026-12-07, docs/inspect.md,
"Keeping the best epoch"): the reconstructive network redrew the training parts with 2.4× and
3.5× less error than held-out good parts, so the discriminator, which learned to mark where
input and reconstruction differ, marked much of every unseen part (mean defect probability
0.46 on held-out good parts against 0.08–0.11 on training parts). The per-epoch check on
held-out good parts with simulated defects saw it: its pixel AUROC peaked at 0.79 and 0.94,
then ended at 0.62 and 0.61. No test part is used: the check paints held-out good parts only.

How: the check is compared as the mean of the last ``WINDOW`` epochs' checks, because one
epoch's check is noisy (it swung 0.30–0.74 from epoch to epoch on grass) and the best of a
noisy series sits above its level by chance. After each epoch whose mean is the best so far,
its weights go to ``best.safetensors`` (before that epoch's checkpoint, so a kill in between is
redone by the resumed epoch, which computes the same weights). When the run finishes or stops
on time, ``model.safetensors`` becomes those weights if the mean ending with the last evaluation
has fallen more than ``MARGIN`` below theirs *and* the last weights show the memorisation this
exists for: they redraw the held-out good parts ``MEMORISED`` times worse than the training
parts, or more. A fall of the check alone is not enough: on grass the check is low and noisy,
and a default run's fell 0.057 below its best 7-epoch mean with no memorisation at all (held-out
error 1.2× the training parts'); kept on the fall alone, it scored image AUROC 0.610 on the real
defects where its last weights scored 0.855. ``state.pt`` keeps the last weights, so
``--resume`` trains on from where training was, not from the kept epoch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from convae.core.errors import RunError
from convae.run.files import BEST, WEIGHTS, load_weights, read_metrics, save_weights, weights_metadata

#: The metrics row's field that decides: pixel AUROC of simulated defects on held-out good parts.
CHECK = "val_pixel_auroc"
#: The run ends on the kept epoch only when the last evaluation's check is this far below it. Near
#: the end of a run that did not memorise its parts the check still moves by about this much
#: from one epoch to the next (it swung 0.79–0.95 over moon's last 20 epochs; the kept epoch
#: beat the last by 0.006 and 0.01 on brick and tissue), and the earlier epoch is less trained:
#: kept on any gain, hubble's validation run ended on epoch 53 of 67 and lost 0.018 image AUROC
#: (docs/inspect.md, "Keeping the best epoch"). Memorising runs fell by 0.17 and 0.33.
MARGIN = 0.05
#: Epochs whose checks are averaged (fewer at the start of a run). Compared one epoch at a time, a
#: trial run on grass ended on epoch 27 of 91, a lucky 0.741 against the last 0.642, and epoch 27
#: scored image AUROC 0.618 on the real defects where the last scored 0.843. Over 7 epochs that
#: run's best mean is 0.033 above its last, while the two runs that memorised fell by 0.087 and
#: 0.272 (docs/inspect.md, "Keeping the best epoch").
WINDOW = 7
#: The last weights count as memorised when their reconstruction's error on the held-out good parts is at
#: least this many times their error on the training parts. The runs that collapsed measured 2.4× (grass)
#: and 3.5× (gravel); runs that did not: moon 1.3× (bf16, 186 epochs), grass 1.2× (fp32, 85 epochs).
MEMORISED = 2.0
#: model.safetensors' metadata key saying it holds a kept epoch, whose value is the mean ending with the
#: last evaluation's check that it was kept over (a later checkpoint writes the file without it).
KEPT = "kept_over"
#: model.safetensors' metadata key saying the check fell but the last weights stayed, not memorised (JSON:
#: the best epoch, its check, the last check and the memorisation ratio), so the report can say so.
NOT_KEPT = "not_kept"
#: ...and the key of the window those means were taken over, so a report describes the rule the run used
#: (runs kept before the window existed compared single epochs: no key, a window of 1).
KEPT_WINDOW = "kept_window"


def _value(row: dict[str, Any]) -> float | None:
    value = row.get(CHECK)
    return float(value) if isinstance(value, (int, float)) else None


def _checks(rows: list[dict[str, Any]]) -> list[float]:
    return [value for value in map(_value, rows) if value is not None]


def running_means(checks: list[float]) -> list[float]:
    """Each check's mean with the ones before it, over up to ``WINDOW`` of them."""
    windows = (checks[max(0, end - WINDOW):end] for end in range(1, len(checks) + 1))
    return [sum(window) / len(window) for window in windows]


def remember_if_best(run_dir: Path, model: torch.nn.Module, rows: list[dict[str, Any]]) -> bool:
    """Write the model to best.safetensors when the mean ending with the newest row's check beats every earlier one."""
    if not rows or _value(rows[-1]) is None:
        return False
    means = running_means(_checks(rows))
    if len(means) > 1 and means[-1] <= max(means[:-1]):
        return False
    save_weights(Path(run_dir) / BEST, model.state_dict(), {"epoch": str(rows[-1]["epoch"]), CHECK: repr(means[-1])})
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


def _marks(run_dir: Path) -> dict[str, str]:
    """model.safetensors' metadata, where the run's end marks what it did; {} without the file."""
    path = Path(run_dir) / WEIGHTS
    return weights_metadata(path) if path.is_file() else {}


def ends_on_kept_epoch(run_dir: Path) -> tuple[int, float, float, int] | None:
    """(epoch, its check, the last evaluation's check, the window of both) when model.safetensors holds a
    kept epoch, else None."""
    meta = _marks(run_dir)
    best = kept(run_dir) if meta.get(KEPT) is not None else None
    return (*best, float(meta[KEPT]), int(meta.get(KEPT_WINDOW, 1))) if best else None


def fell_without_memorisation(run_dir: Path) -> dict[str, Any] | None:
    """What model.safetensors records when the check fell but its (last) weights stayed, else None."""
    marker = _marks(run_dir).get(NOT_KEPT)
    return json.loads(marker) if marker else None


def settle_on_best(run_dir: Path, model: torch.nn.Module, last: dict[str, Any],
                   memorisation: Callable[[torch.nn.Module], float | None]) -> dict[str, Any] | None:
    """Make model.safetensors (and ``model``) the kept epoch's weights when the mean ending with ``last``'s
    check fell ``MARGIN`` below the kept one's and ``memorisation(model)`` (the held-out good parts'
    reconstruction error over the training parts', on the last weights) is ``MEMORISED`` or more.

    ``last`` is the last evaluation: metrics.jsonl's last row, or a stop mid-epoch's row, which is not in it.
    Returns what was done, for the run's summary and its one line (``kept_epoch``, or ``not_kept`` when
    the check fell but the weights were not memorised), or None when nothing fell.
    """
    best = kept(run_dir)
    if best is None or _value(last) is None:
        return None
    rows = read_metrics(Path(run_dir))
    if rows and rows[-1].get("epoch") == last.get("epoch"):
        rows = rows[:-1]
    final = running_means(_checks([*rows, last]))[-1]
    if final > best[1] - MARGIN:
        return None
    ratio = memorisation(model)  # None only without held-out parts, and then no check could have fallen
    if ratio is not None and ratio < MEMORISED:
        fell = {"epoch": best[0], "check": best[1], "last_check": final, "memorisation": ratio}
        path = Path(run_dir) / WEIGHTS
        save_weights(path, load_weights(path), {**weights_metadata(path), NOT_KEPT: json.dumps(fell)})
        return {NOT_KEPT: fell}
    weights = load_weights(Path(run_dir) / BEST)
    model.load_state_dict(weights)
    save_weights(Path(run_dir) / WEIGHTS, weights,
                 {"epoch": str(best[0]), "step": "0", KEPT: repr(final), KEPT_WINDOW: str(WINDOW)})
    return {"kept_epoch": best[0], "kept_check": best[1], "last_check": final, KEPT_WINDOW: WINDOW,
            **({"memorisation": ratio} if ratio is not None else {})}
