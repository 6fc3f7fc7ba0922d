"""Decision thresholds, fitted on normal images the run never trained on.

The threshold is fitted on the run's validation split, which holds only held-out normal
images. ``quantile`` (default 0.99) or ``meanstd`` (mean + k·std) look at the normal
scores only, and the verdict is ``score > threshold`` (strict), so a validation set of
normal images can never produce "everything is anomalous": at most about 1 − q of normal
images are flagged, and none when all scores are equal. ``f1`` picks the F1-optimal
threshold on labelled data: the validation normals plus the same share of the training
split's other classes (anomalies the model never saw), so the test split is never
touched. The threshold is stored in ``RUN_DIR/threshold.json`` with how it was fitted.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from convae.applications.anomaly.runs import normal_splits, open_detector_run, run_tile
from convae.applications.anomaly.scores import (
    DEFAULT_SCORE,
    HYBRID,
    KNOWN_KINDS,
    SEGMENT,
    check_score_kind,
    default_score,
    run_code_index,
    score_images,
)
from convae.core.atomic import read_json
from convae.core.device import pick_device
from convae.core.errors import ConvaeError
from convae.data import ImageSet
from convae.run import Run
from convae.run.fields import Field, Sources, check_fields

THRESHOLD_METHODS = ("quantile", "meanstd", "f1")
THRESHOLD_FILE = "threshold.json"


@dataclass
class Threshold:
    """A fitted decision threshold: an image is anomalous when its score is **above** ``value``."""

    value: float
    score: str
    method: str
    quantile: float | None = None
    k: float | None = None
    validation_images: int = 0
    validation_anomalies: int = 0
    validation_flagged: float | None = None  # share of the validation normals above the threshold
    fitted_on: str = ""
    normal_mean: float | None = None
    normal_std: float | None = None
    f1: float | None = None  # F1 on the fitting data (method f1)
    heatmap_scale: float | None = None  # per-pixel error drawn as full heat (99.9th pct of normal maps)
    #: A pixel is predicted defective above this error: the 99.9th percentile of the normal
    #: validation images' pixel errors, so the masks are fitted on normal images only.
    pixel_threshold: float | None = None
    fitted_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))

    def describe(self) -> str:
        how = {
            "quantile": f"quantile {self.quantile} of {self.validation_images} normal validation scores",
            "meanstd": f"mean + {self.k}·std of {self.validation_images} normal validation scores",
            "f1": f"F1-optimal on {self.validation_images} validation images ({self.validation_anomalies} anomalous)"
                  + (f", F1 {self.f1:.4f} there" if self.f1 is not None else ""),
        }.get(self.method, self.method)
        return f"{self.value:.6g} ({self.score}, {how})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str | None = None) -> "Threshold":
        """Field by field: a stored threshold of NaN would call every image normal, so each value
        is checked for its type and range, naming ``origin`` (the file) and the field."""
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        if origin is not None:
            sources = Sources()
            sources.mark(values, origin)
            values = check_fields(values, THRESHOLD_FIELDS, sources)
            if values.get("score") not in KNOWN_KINDS:
                raise ConvaeError(f"{origin}: score must be one of {', '.join(KNOWN_KINDS)}, got {values.get('score')!r}")
        return cls(**values)


#: What a stored threshold.json may hold (checked on every read).
THRESHOLD_FIELDS = {
    "value": Field("float"), "score": Field("str"), "method": Field("str"), "quantile": Field("float", low=0, high=1),
    "k": Field("float"), "validation_images": Field("int", low=0), "validation_anomalies": Field("int", low=0),
    "validation_flagged": Field("float", low=0, high=1), "fitted_on": Field("str"), "normal_mean": Field("float"),
    "normal_std": Field("float", low=0), "f1": Field("float", low=0, high=1),
    "heatmap_scale": Field("float", low=0), "pixel_threshold": Field("float"), "fitted_at": Field("str"),
}


def verdicts(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean 'anomalous' per score: strictly above the threshold."""
    return np.asarray(scores, dtype=np.float64) > float(threshold)


def fit_threshold(
    scores: Sequence[float] | np.ndarray,
    *,
    labels: Sequence[int] | np.ndarray | None = None,
    method: str = "quantile",
    quantile: float = 0.99,
    k: float = 3.0,
    score: str = DEFAULT_SCORE,
    fitted_on: str = "",
) -> Threshold:
    """Fit a threshold on validation scores.

    ``labels`` (1 = anomalous, 0 = normal) may be omitted when every image is normal, the
    usual real case. ``quantile`` and ``meanstd`` use the normal scores only; ``f1`` needs
    both kinds and maximises F1 over every distinct threshold (scikit-learn's
    ``precision_recall_curve``).
    """
    if method not in THRESHOLD_METHODS:
        raise ConvaeError(f"--threshold-method must be one of {', '.join(THRESHOLD_METHODS)}, got {method!r}")
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.zeros(len(values), dtype=np.int64) if labels is None else np.asarray(labels).astype(np.int64).reshape(-1)
    if len(y) != len(values):
        raise ConvaeError(f"{len(values)} scores but {len(y)} labels")
    if not np.isin(y, (0, 1)).all():
        raise ConvaeError("threshold labels must be 0 (normal) or 1 (anomalous)")
    if not np.isfinite(values).all():
        raise ConvaeError("cannot fit a threshold: some validation scores are NaN or Inf")
    normal = values[y == 0]
    if len(normal) == 0:
        raise ConvaeError("cannot fit a threshold: the validation data holds no normal images")
    common = dict(
        score=check_score_kind(score), method=method, validation_images=int(len(values)),
        validation_anomalies=int(y.sum()), fitted_on=fitted_on,
        normal_mean=float(normal.mean()), normal_std=float(normal.std(ddof=1)) if len(normal) > 1 else 0.0,
    )
    if method == "quantile":
        if not 0.0 < quantile <= 1.0 or not math.isfinite(quantile):
            raise ConvaeError(f"--quantile must be in (0, 1], got {quantile}")
        value = float(np.quantile(normal, quantile))
        result = Threshold(value=value, quantile=float(quantile), **common)
    elif method == "meanstd":
        if not math.isfinite(k) or k < 0:
            raise ConvaeError(f"--k must be a number ≥ 0, got {k}")
        value = float(normal.mean() + k * common["normal_std"])
        result = Threshold(value=value, k=float(k), **common)
    else:
        if y.sum() == 0:
            raise ConvaeError(
                "--threshold-method f1 needs labelled anomalies, and the validation data holds only normal "
                "images; use quantile or meanstd"
            )
        value, best = f1_optimal_threshold(values, y)
        result = Threshold(value=value, f1=best, **common)
    result.validation_flagged = float(verdicts(normal, result.value).mean())
    return result


def f1_optimal_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 with the strict rule ``score > threshold``.

    ``precision_recall_curve`` flags ``score >= t``; the same images are flagged by
    ``score > t'`` for t' just below t (midway to the next lower score), which is what is
    returned, so the stored threshold reproduces the F1 it was chosen for.
    """
    from sklearn.metrics import precision_recall_curve

    precision, recall, cuts = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = int(np.argmax(f1))
    cut = float(cuts[best])
    below = scores[scores < cut]
    value = float((cut + below.max()) / 2) if len(below) else float(np.nextafter(cut, -np.inf))
    if not value < cut:  # adjacent floats: nothing fits between them
        value = float(np.nextafter(cut, -np.inf))
    return value, float(f1[best])


def validation_data(run_dir: str | Path | Run, *, with_anomalies: bool = False) -> tuple[ImageSet, np.ndarray, str]:
    """The run's held-out validation images, labels (1 = anomalous) and a description.

    The normal images are exactly the ones the trainer held out (convae.run.splits).
    ``with_anomalies`` adds the same fraction of the training split's other classes:
    anomalies the model never trained on.
    """
    run = open_detector_run(run_dir)
    cfg, splits = run.config.training, normal_splits(run)
    val = splits.val
    assert val is not None
    what = "all classes" if cfg.normal_classes is None else f"classes {', '.join(run.config.normal_class_names() or [])}"
    description = f"validation split: {len(val)} normal images ({what}) held out of {cfg.dataset}/train"
    labels = np.zeros(len(val), dtype=np.int64)
    if not with_anomalies:
        return val, labels, description
    if cfg.normal_classes is None:
        raise ConvaeError(f"{run.path}: the run was trained on every class, so it has no labelled anomalies for "
                          "--threshold-method f1; use quantile or meanstd")
    anomalies = splits.anomalies
    images = torch.cat([val.images, anomalies.images])
    merged = ImageSet(images, torch.cat([val.labels, anomalies.labels]), val.classes, "val", val.name)
    labels = np.concatenate([labels, np.ones(len(anomalies), dtype=np.int64)])
    description += (f" + {len(anomalies)} anomalous images ({cfg.val_fraction:g} of the other classes of "
                    f"{cfg.dataset}/train, never trained on)")
    return merged, labels, description


def fit_run_threshold(
    run_dir: str | Path | Run,
    *,
    method: str = "quantile",
    quantile: float = 0.99,
    k: float = 3.0,
    score: str | None = None,
    device: str = "auto",
    batch_size: int = 256,
    save: bool = True,
    log: Callable[[str], None] | None = None,
) -> Threshold:
    """Fit the threshold of a run on its validation split and store it in RUN_DIR/threshold.json.

    ``score`` None: the run's own (``segment`` for an inspect run, else ``ssim``). A defect map is
    a probability: it is drawn on a fixed 0–1 scale, and a pixel is predicted defective above
    the larger of 0.5 and the normal parts' 99.9th percentile."""
    run = open_detector_run(run_dir)
    score = check_score_kind(score or default_score(run))
    if method not in THRESHOLD_METHODS:
        raise ConvaeError(f"--threshold-method must be one of {', '.join(THRESHOLD_METHODS)}, got {method!r}")
    target = pick_device(device)
    model = run.model(target)
    data, labels, description = validation_data(run, with_anomalies=method == "f1")
    index = run_code_index(run, model, device=target, batch_size=batch_size, log=log) if score == HYBRID else None
    scores, maps = score_images(model, data.images, score, batch_size=batch_size, device=target, with_maps=True,
                                index=index, tile=run_tile(run))
    threshold = fit_threshold(scores, labels=labels, method=method, quantile=quantile, k=k, score=score,
                              fitted_on=description)
    normal_maps = maps[torch.from_numpy(labels == 0)]
    threshold.heatmap_scale = threshold.pixel_threshold = _heatmap_scale(normal_maps)
    if score == SEGMENT:
        threshold.heatmap_scale, threshold.pixel_threshold = 1.0, max(threshold.pixel_threshold, 0.5)
    if save:
        run.write_json(THRESHOLD_FILE, threshold.to_dict())
    return threshold


def _heatmap_scale(maps: torch.Tensor) -> float:
    values = maps.flatten().float()
    if values.numel() > 2_000_000:
        values = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[:2_000_000]]
    scale = float(torch.quantile(values, 0.999)) if values.numel() else 0.0
    return scale if scale > 0 else 1.0


def load_threshold(run_dir: str | Path) -> Threshold | None:
    path = Path(run_dir) / THRESHOLD_FILE
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or "value" not in data or "score" not in data:
        raise ConvaeError(f"{path}: not a threshold file (needs 'value' and 'score'); refit with convae detect --fit")
    return Threshold.from_dict(data, origin=str(path))


def resolve_threshold(
    run_dir: str | Path | Run,
    *,
    value: float | None = None,
    score: str | None = None,
    refit: bool = False,
    method: str = "quantile",
    quantile: float = 0.99,
    k: float = 3.0,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
) -> Threshold:
    """The threshold to use: given ``value``, else the stored one, else (or with ``refit``) a fresh fit.

    A stored threshold belongs to one score kind; asking for another kind without a value
    or a refit is an error rather than a silent refit.
    """
    run = open_detector_run(run_dir)
    run_dir = run.path
    stored = load_threshold(run_dir)
    if value is not None:
        if not math.isfinite(value):
            raise ConvaeError(f"--threshold must be a finite number, got {value}")
        kind = score or (stored.score if stored else default_score(run))
        return Threshold(value=float(value), score=check_score_kind(kind), method="given",
                         fitted_on="given on the command line",
                         heatmap_scale=stored.heatmap_scale if stored and stored.score == kind else None)
    if stored is not None and not refit:
        if score is not None and score != stored.score:
            raise ConvaeError(
                f"{run_dir / THRESHOLD_FILE} holds a threshold for {stored.score} scores, not {score}; "
                f"refit with --fit --score {score} or pass --threshold"
            )
        return stored
    threshold = fit_run_threshold(run, method=method, quantile=quantile, k=k, score=score or default_score(run),
                                  device=device, log=log)
    if log:
        log(f"fitted threshold {threshold.describe()}; stored in {run_dir / THRESHOLD_FILE}")
    return threshold


