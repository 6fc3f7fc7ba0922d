"""Anomaly detection with a trained autoencoder: reconstruction error as the anomaly score.

An autoencoder trained only on normal images reconstructs them well and anomalies badly.
This module turns a run directory into a detector:

* **scores** (:func:`score_images`, :func:`error_maps`): per image ``mse`` (mean squared
  error per pixel), ``l1`` (mean absolute error per pixel) or ``ssim`` (1 − SSIM, the
  default: it ranks anomalies best on MNIST and Fashion-MNIST, see benchmarks/anomaly.py),
  and per pixel the matching error map (squared error, absolute error, 1 − local SSIM).
* **threshold** (:func:`fit_threshold`, :func:`fit_run_threshold`): fitted on the run's
  validation split, which holds only normal images the model never trained on. ``quantile``
  (default 0.99) or ``meanstd`` (mean + k·std) look at the normal scores only, and the
  verdict is ``score > threshold`` (strict), so a validation set of normal images can never
  produce "everything is anomalous": at most about 1 − q of normal images are flagged, and
  none when all scores are equal. ``f1`` picks the F1-optimal threshold on labelled data:
  for a run it uses the validation normals plus the same fraction of the training split's
  other classes (anomalies the model never saw), so the test split is never touched. The
  threshold is stored in ``RUN_DIR/threshold.json`` with how it was fitted.
* **detection** (:func:`detect_paths`): score image files and folders, with a CSV and
  heatmap overlays; images of another size or channel count are converted (and say so),
  unreadable files are reported by name and the others are still scored.
* **evaluation** (:func:`evaluate_detection`): AUROC, average precision and F1 at the
  stored threshold on a labelled split, a ROC curve and score histograms in
  ``RUN_DIR/figures/``, all in ``RUN_DIR/detect-eval.json`` and the report.

Metrics come from scikit-learn (``roc_auc_score``, ``average_precision_score``,
``precision_recall_curve``, ``precision_recall_fscore_support``); SSIM from torchmetrics.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from convae.applications.code_index import (
    CodeIndex,
    build_code_index,
    cached_code_index,
    save_code_index,
    tensor_code,
)
from convae.data import Batches, ImageSet
from convae.data.files import find_image_files, image_for_model
from convae.errors import ConvaeError, DataError
from convae.metrics import ssim_kernel
from convae.runs import (
    FIGURES,
    atomic_write_bytes,
    atomic_write_text,
    load_model,
    read_json,
    require_run,
    write_json,
)

PIXEL_KINDS = ("ssim", "mse", "l1")  # the mean of an error map; need nothing but the model
HYBRID = "hybrid"  # ssim plus the code's distance to the normal training codes (needs a CodeIndex)
SCORE_KINDS = (*PIXEL_KINDS, HYBRID)
DEFAULT_SCORE = "ssim"
THRESHOLD_METHODS = ("quantile", "meanstd", "f1")
THRESHOLD_FILE = "threshold.json"
EVAL_FILE = "detect-eval.json"
NORMAL, ANOMALOUS, UNREADABLE = "normal", "anomalous", "unreadable"


# -- scores -----------------------------------------------------------------------------
def check_score_kind(kind: str) -> str:
    if kind not in SCORE_KINDS:
        raise ConvaeError(f"--score must be one of {', '.join(SCORE_KINDS)}, got {kind!r}")
    return kind


def _needs_index(kinds: Sequence[str], index: CodeIndex | None) -> None:
    if HYBRID in kinds and index is None:
        raise ConvaeError("the hybrid score needs the run's code index (convae.applications.anomaly.run_code_index)")


@torch.no_grad()
def error_maps(model: torch.nn.Module, x: torch.Tensor, kind: str = DEFAULT_SCORE,
               index: CodeIndex | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scores N, error maps N×H×W, reconstructions N×C×H×W) for a float batch in [0, 1].

    The score of an image is the mean of its error map: ``mse`` the squared error and
    ``l1`` the absolute error per pixel (averaged over channels, on the raw output, as
    :func:`convae.metrics.reconstruction_metrics` does), ``ssim`` 1 − the local SSIM map
    (Gaussian window, data range 1, output clipped to [0, 1]; its mean is torchmetrics'
    SSIM of the image, so the score equals 1 − :func:`convae.metrics.batch_ssim`). ``hybrid``
    (needs ``index``) draws the ``ssim`` map and adds the code distance to its score
    (:meth:`CodeIndex.combine`).
    """
    check_score_kind(kind)
    _needs_index((kind,), index)
    code = tensor_code(model, x) if kind == HYBRID else None
    output = reconstruct(model, x, code=code)
    maps = maps_from(output, x, kind)
    scores = maps.flatten(1).mean(1)
    if code is not None:
        distances = index.distances(code.flatten(1).float())
        scores = torch.from_numpy(index.combine(scores.double().cpu().numpy(), distances)).to(x.device)
    return scores, maps, output


def reconstruct(model: torch.nn.Module, x: torch.Tensor, *, code: torch.Tensor | None = None) -> torch.Tensor:
    """The model's output for ``x``; decoded from ``code`` when the caller already encoded ``x``
    (the hybrid score needs the code too, and the encoder need not run twice)."""
    output = (model(x) if code is None else model.decode(code)).float()
    if output.shape != x.shape:
        raise ConvaeError(
            f"the model maps {tuple(x.shape[1:])} to {tuple(output.shape[1:])}; anomaly scores need a "
            "reconstruction of the input (a reconstruct or denoise run)"
        )
    return output


def maps_from(output: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """The per-pixel error map (N×H×W) of one score kind (``hybrid``: the ``ssim`` map)."""
    x = x.float()
    if kind == "mse":
        return (output - x).pow(2).mean(1)
    if kind == "l1":
        return (output - x).abs().mean(1)
    if kind not in ("ssim", HYBRID):
        check_score_kind(kind)
    kernel = max(ssim_kernel(*x.shape[-2:]), 1)
    _, full = structural_similarity_index_measure(
        output.clamp(0, 1), x, data_range=1.0, kernel_size=kernel, reduction="none", return_full_image=True
    )
    return 1.0 - full.mean(1)


@torch.no_grad()
def score_kinds(
    model: torch.nn.Module,
    images: torch.Tensor,
    kinds: Sequence[str] = PIXEL_KINDS,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    index: CodeIndex | None = None,
) -> dict[str, np.ndarray]:
    """Scores of several kinds from one pass of the model: {kind: float64 array}.

    ``hybrid`` needs ``index``, the run's :class:`CodeIndex` (:func:`run_code_index`).
    """
    for kind in kinds:
        check_score_kind(kind)
    _needs_index(kinds, index)
    model.eval()
    pixel_kinds = {"ssim" if kind == HYBRID else kind for kind in kinds}
    parts: dict[str, list[torch.Tensor]] = {kind: [] for kind in pixel_kinds}
    codes: list[torch.Tensor] = []
    for x in Batches(images, batch_size, shuffle=False, seed=0, device=device):
        code = tensor_code(model, x) if HYBRID in kinds else None
        output = reconstruct(model, x, code=code)
        for kind in pixel_kinds:
            parts[kind].append(maps_from(output, x, kind).flatten(1).mean(1).double().cpu())
        if code is not None:
            codes.append(code.flatten(1).float().cpu())
    result = {kind: torch.cat(v).numpy() if v else np.zeros(0) for kind, v in parts.items()}
    if HYBRID in kinds:
        distances = index.distances(torch.cat(codes)) if codes else np.zeros(0)
        result[HYBRID] = index.combine(result["ssim"], distances)
    result = {kind: result[kind] for kind in kinds}
    if not all(np.isfinite(v).all() for v in result.values()):
        raise ConvaeError("the model produced NaN or Inf reconstructions; its scores cannot be used")
    return result


@torch.no_grad()
def score_images(
    model: torch.nn.Module,
    images: torch.Tensor,
    kind: str = DEFAULT_SCORE,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    with_maps: bool = False,
    index: CodeIndex | None = None,
) -> np.ndarray | tuple[np.ndarray, torch.Tensor]:
    """Anomaly score of every image of a uint8 N×C×H×W tensor (float64 array, higher = more anomalous).

    ``with_maps`` also returns the per-pixel error maps (float32 N×H×W, on the CPU).
    """
    if not with_maps:
        return score_kinds(model, images, (kind,), batch_size=batch_size, device=device, index=index)[kind]
    _needs_index((kind,), index)
    model.eval()
    scores, maps = [], []
    for x in Batches(images, batch_size, shuffle=False, seed=0, device=device):
        s, m, _ = error_maps(model, x, kind, index)
        scores.append(s.double().cpu())
        maps.append(m.cpu())
    values = torch.cat(scores).numpy() if scores else np.zeros(0)
    if not np.isfinite(values).all():
        raise ConvaeError("the model produced NaN or Inf reconstructions; its scores cannot be used")
    h, w = images.shape[-2:]
    return values, (torch.cat(maps) if maps else torch.zeros(0, h, w))


# -- thresholds -------------------------------------------------------------------------
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
    def from_dict(cls, data: dict[str, Any]) -> "Threshold":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


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
    from sklearn.metrics import precision_recall_curve  # noqa: PLC0415

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


# -- a run's held-out data --------------------------------------------------------------
def _training_config(config: dict[str, Any]):
    from convae.train import TrainConfig  # noqa: PLC0415

    return TrainConfig.from_dict(config["training"])


def _check_task(config: dict[str, Any], run_dir: Path) -> None:
    task = config.get("task", config.get("training", {}).get("task", "reconstruct"))
    if task == "colorize":
        raise ConvaeError(f"{run_dir}: a colorize run does not reconstruct its input; anomaly scores need a "
                          "reconstruct or denoise run")


def normal_class_names(config: dict[str, Any]) -> list[str] | None:
    indices = config.get("training", {}).get("normal_classes")
    if indices is None:
        return None
    classes = config.get("dataset", {}).get("classes") or []
    return [classes[i] if i < len(classes) else str(i) for i in indices]


def _normal_split(run_dir: Path, config: dict[str, Any]) -> tuple[ImageSet, ImageSet, ImageSet]:
    """(training split, normal images trained on, normal validation images): the Trainer's own split."""
    from convae.evaluation import load_run_split  # noqa: PLC0415
    from convae.train import split_validation  # noqa: PLC0415

    cfg = _training_config(config)
    if not cfg.val_fraction:
        raise ConvaeError(
            f"{run_dir}: this run kept no validation split (val_fraction 0), so there are no held-out normal "
            "images to fit a threshold (or the hybrid score) on; train with --normal-classes (keeps 10%) or --val-fraction, "
            "or pass --threshold"
        )
    train = load_run_split(config, "train")
    normal_set = train.select_classes(cfg.normal_classes) if cfg.normal_classes is not None else train
    fit, val = split_validation(normal_set, cfg.val_fraction, cfg.seed)
    if val is None or len(val) == 0:
        raise ConvaeError(f"{run_dir}: the validation split is empty; use a larger --val-fraction")
    return train, fit, val


def validation_data(run_dir: str | Path, *, with_anomalies: bool = False) -> tuple[ImageSet, np.ndarray, str]:
    """The run's held-out validation images, labels (1 = anomalous) and a description.

    The normal images are exactly the ones ``Trainer`` held out (``split_validation`` is a
    pure function of the data, the fraction and the seed). ``with_anomalies`` adds the same
    fraction of the training split's other classes: anomalies the model never trained on.
    """
    run_dir = Path(run_dir)
    config = _read_run_config(run_dir)
    cfg = _training_config(config)
    train, _, val = _normal_split(run_dir, config)
    what = "all classes" if cfg.normal_classes is None else f"classes {', '.join(normal_class_names(config) or [])}"
    description = f"validation split: {len(val)} normal images ({what}) held out of {cfg.dataset}/train"
    labels = np.zeros(len(val), dtype=np.int64)
    if not with_anomalies:
        return val, labels, description
    if cfg.normal_classes is None:
        raise ConvaeError(f"{run_dir}: the run was trained on every class, so it has no labelled anomalies for "
                          "--threshold-method f1; use quantile or meanstd")
    others = train.subset(~torch.isin(train.labels, torch.tensor(cfg.normal_classes, dtype=torch.int64)))
    count = int(round(len(others) * cfg.val_fraction))
    order = torch.randperm(len(others), generator=torch.Generator().manual_seed(cfg.seed + 104729))[:count]
    anomalies = others.subset(order.sort().values)
    images = torch.cat([val.images, anomalies.images])
    merged = ImageSet(images, torch.cat([val.labels, anomalies.labels]), val.classes, "val", val.name)
    labels = np.concatenate([labels, np.ones(len(anomalies), dtype=np.int64)])
    description += (f" + {len(anomalies)} anomalous images ({cfg.val_fraction:g} of the other classes of "
                    f"{cfg.dataset}/train, never trained on)")
    return merged, labels, description


def run_code_index(run_dir: str | Path, model: torch.nn.Module | None = None, *, device: str | torch.device = "cpu",
                   batch_size: int = 256, log: Callable[[str], None] | None = None) -> CodeIndex:
    """The run's :class:`CodeIndex` for the hybrid score: cached, or built from its training data.

    The codes are those of the normal training images the model learnt from; the
    standardisation comes from the held-out normal validation images, as for thresholds.
    """
    run_dir = Path(run_dir)
    if model is None:
        model, _ = load_model(run_dir, device)
    cached = cached_code_index(run_dir, model)
    if cached is not None:
        return cached
    _, fit, val = _normal_split(run_dir, _read_run_config(run_dir))
    validation_ssim = score_images(model, val.images, "ssim", batch_size=batch_size, device=device)
    index = build_code_index(model, fit.images, val.images, validation_ssim, batch_size=batch_size, device=device)
    path = save_code_index(run_dir, index)
    if log:
        log(f"indexed the codes of {len(index.codes)} normal training images in {path}")
    return index


def _read_run_config(run_dir: Path) -> dict[str, Any]:
    from convae.runs import read_config  # noqa: PLC0415

    require_run(run_dir)
    config = read_config(run_dir)
    _check_task(config, run_dir)
    return config


def fit_run_threshold(
    run_dir: str | Path,
    *,
    method: str = "quantile",
    quantile: float = 0.99,
    k: float = 3.0,
    score: str = DEFAULT_SCORE,
    device: str = "auto",
    batch_size: int = 256,
    save: bool = True,
    log: Callable[[str], None] | None = None,
) -> Threshold:
    """Fit the threshold of a run on its validation split and store it in RUN_DIR/threshold.json."""
    from convae.train import pick_device  # noqa: PLC0415

    run_dir = Path(run_dir)
    check_score_kind(score)
    if method not in THRESHOLD_METHODS:
        raise ConvaeError(f"--threshold-method must be one of {', '.join(THRESHOLD_METHODS)}, got {method!r}")
    target = pick_device(device)
    model, _ = load_model(run_dir, target)
    data, labels, description = validation_data(run_dir, with_anomalies=method == "f1")
    index = run_code_index(run_dir, model, device=target, batch_size=batch_size, log=log) if score == HYBRID else None
    scores, maps = score_images(model, data.images, score, batch_size=batch_size, device=target, with_maps=True,
                                index=index)
    threshold = fit_threshold(scores, labels=labels, method=method, quantile=quantile, k=k, score=score,
                              fitted_on=description)
    normal_maps = maps[torch.from_numpy(labels == 0)]
    threshold.heatmap_scale = _heatmap_scale(normal_maps)
    if save:
        write_json(run_dir / THRESHOLD_FILE, threshold.to_dict())
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
    return Threshold.from_dict(data)


def resolve_threshold(
    run_dir: str | Path,
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
    run_dir = Path(run_dir)
    stored = load_threshold(run_dir)
    if value is not None:
        if not math.isfinite(value):
            raise ConvaeError(f"--threshold must be a finite number, got {value}")
        kind = score or (stored.score if stored else DEFAULT_SCORE)
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
    threshold = fit_run_threshold(run_dir, method=method, quantile=quantile, k=k, score=score or DEFAULT_SCORE,
                                  device=device, log=log)
    if log:
        log(f"fitted threshold {threshold.describe()}; stored in {run_dir / THRESHOLD_FILE}")
    return threshold


# -- scoring files ----------------------------------------------------------------------
@dataclass
class ImageResult:
    path: str
    score: float | None = None
    verdict: str = UNREADABLE
    note: str = ""
    heatmap: str | None = None


@dataclass
class Detection:
    results: list[ImageResult]
    threshold: Threshold
    csv: Path | None = None
    heatmaps: Path | None = None

    @property
    def unreadable(self) -> list[ImageResult]:
        return [r for r in self.results if r.verdict == UNREADABLE]

    @property
    def anomalous(self) -> list[ImageResult]:
        return [r for r in self.results if r.verdict == ANOMALOUS]


@torch.no_grad()
def detect_paths(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    *,
    threshold: Threshold | None = None,
    threshold_value: float | None = None,
    score: str | None = None,
    csv_path: str | Path | None = None,
    heatmaps: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 256,
    log: Callable[[str], None] | None = None,
    **fit_options: Any,
) -> Detection:
    """Score image files and folders with a run; unreadable files are reported, never fatal.

    Returns every file's score and verdict in input order. ``csv_path`` gets one row per
    file (unreadable ones included, with the reason); ``heatmaps`` gets one PNG per scored
    image: the input, its reconstruction and the error map over the input.
    """
    from convae.train import pick_device  # noqa: PLC0415

    run_dir = Path(run_dir)
    config = _read_run_config(run_dir)
    files = find_image_files(inputs)
    if not files:
        raise ConvaeError("detect needs image files or folders to score")
    input_shape = tuple(config["model"]["input_shape"])
    results: list[ImageResult] = []
    loaded: list[tuple[int, torch.Tensor]] = []
    for found in files:
        result = ImageResult(path=str(found.path))
        try:
            if found.error:
                raise DataError(f"{found.path}: {found.error}")
            image, result.note = image_for_model(found.path, input_shape)
            loaded.append((len(results), image))
        except ConvaeError as error:
            result.note = str(error)
        results.append(result)
    if not loaded:
        raise ConvaeError(f"none of the {len(files)} file(s) could be read as an image (first: {results[0].note})")
    if threshold is None:  # after reading the files: no fitting when there is nothing to score
        threshold = resolve_threshold(run_dir, value=threshold_value, score=score, device=device, log=log,
                                      **fit_options)
    target = pick_device(device)
    model, config = load_model(run_dir, target)
    index = run_code_index(run_dir, model, device=target, log=log) if threshold.score == HYBRID else None
    images = torch.stack([image for _, image in loaded])
    heat_dir = Path(heatmaps) if heatmaps is not None else None
    used_names: set[str] = set()
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(target).float().div_(255)
        scores, maps, outputs = error_maps(model, x, threshold.score, index)
        if not bool(torch.isfinite(scores).all()):
            raise ConvaeError("the model produced NaN or Inf reconstructions; its scores cannot be used")
        for offset in range(x.shape[0]):
            index = loaded[start + offset][0]
            result = results[index]
            result.score = float(scores[offset])
            result.verdict = ANOMALOUS if result.score > threshold.value else NORMAL
            if heat_dir is not None:
                name = _unique_name(Path(result.path).stem, used_names)
                result.heatmap = str(write_heatmap(
                    heat_dir / f"{name}.png", x[offset].cpu(), outputs[offset].clamp(0, 1).cpu(), maps[offset].cpu(),
                    scale=threshold.heatmap_scale or float(maps.max().clamp(min=1e-8)),
                    caption=f"{threshold.score} {result.score:.4g} {'>' if result.verdict == ANOMALOUS else '<='} "
                            f"{threshold.value:.4g}: {result.verdict}",
                ))
    detection = Detection(results, threshold, Path(csv_path) if csv_path else None, heat_dir)
    if csv_path is not None:
        write_csv(Path(csv_path), results, threshold)
    return detection


def _unique_name(stem: str, used: set[str]) -> str:
    name, number = stem or "image", 2
    while name in used:
        name = f"{stem}-{number}"
        number += 1
    used.add(name)
    return name


CSV_COLUMNS = ("path", "score", "score_kind", "threshold", "verdict", "note", "heatmap")


def write_csv(path: Path, results: Sequence[ImageResult], threshold: Threshold) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in results:
        writer.writerow([r.path, "" if r.score is None else f"{r.score:.8g}", threshold.score,
                         f"{threshold.value:.8g}", r.verdict, r.note, r.heatmap or ""])
    atomic_write_text(path, buffer.getvalue())
    return path


def write_heatmap(
    path: Path, image: torch.Tensor, output: torch.Tensor, error: torch.Tensor, *, scale: float, caption: str = ""
) -> Path:
    """A PNG of three panels: the input, its reconstruction, the error map over the input.

    Errors are drawn with the 'inferno' colormap from 0 to ``scale`` (the 99.9th percentile
    of per-pixel errors on normal validation images), blended over the gray input with an
    opacity that grows with the error, so heat means "worse than almost any normal pixel".
    """
    from matplotlib import colormaps  # noqa: PLC0415
    from PIL import Image, ImageDraw  # noqa: PLC0415

    def rgb(t: torch.Tensor) -> np.ndarray:
        t = t.float().clamp(0, 1)
        t = t.expand(3, -1, -1) if t.shape[0] == 1 else t[:3]
        return t.permute(1, 2, 0).numpy()

    base = rgb(image)
    gray = base.mean(2, keepdims=True).repeat(3, 2)
    level = np.clip(error.float().numpy() / max(scale, 1e-12), 0.0, 1.0)
    heat = colormaps["inferno"](level)[..., :3]
    alpha = (0.25 + 0.75 * level)[..., None]
    overlay = (1 - alpha) * gray + alpha * heat
    height, width = level.shape
    zoom = max(1, math.ceil(112 / max(height, width)))
    gap = np.ones((height, max(1, width // 14), 3))
    strip = np.concatenate([base, gap, rgb(output), gap, overlay], axis=1)
    picture = Image.fromarray((strip * 255).round().astype(np.uint8))
    picture = picture.resize((picture.width * zoom, picture.height * zoom), Image.NEAREST)
    if caption:
        canvas = Image.new("RGB", (picture.width, picture.height + 14), "white")
        canvas.paste(picture, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), caption, fill=(0, 0, 0))
        picture = canvas
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


# -- evaluation on a labelled split -----------------------------------------------------
def detection_metrics(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray,
                      threshold: float | None = None) -> dict[str, Any]:
    """AUROC, average precision and (at ``threshold``) precision, recall, F1 and counts.

    ``labels``: 1 = anomalous (the positive class), 0 = normal. Uses scikit-learn.
    """
    from sklearn.metrics import (  # noqa: PLC0415
        average_precision_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if len(np.unique(y)) < 2:
        raise ConvaeError("AUROC needs both normal and anomalous images in the evaluation data")
    result: dict[str, Any] = {
        "auroc": float(roc_auc_score(y, s)),
        "average_precision": float(average_precision_score(y, s)),
        "images": int(len(y)),
        "normal_images": int((y == 0).sum()),
        "anomalous_images": int((y == 1).sum()),
    }
    if threshold is not None:
        predicted = verdicts(s, threshold).astype(np.int64)
        precision, recall, f1, _ = precision_recall_fscore_support(
            y, predicted, average="binary", pos_label=1, zero_division=0
        )
        result.update({
            "threshold": float(threshold),
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "true_positives": int(((predicted == 1) & (y == 1)).sum()),
            "false_positives": int(((predicted == 1) & (y == 0)).sum()),
            "true_negatives": int(((predicted == 0) & (y == 0)).sum()),
            "false_negatives": int(((predicted == 0) & (y == 1)).sum()),
            "false_positive_rate": float(((predicted == 1) & (y == 0)).sum() / max((y == 0).sum(), 1)),
        })
    return result


def evaluate_detection(
    run_dir: str | Path,
    *,
    dataset: str | None = None,
    normal_classes: Sequence[int] | None = None,
    threshold: Threshold | None = None,
    threshold_value: float | None = None,
    score: str | None = None,
    device: str = "auto",
    batch_size: int = 256,
    figures: bool = True,
    report: bool = True,
    log: Callable[[str], None] | None = None,
    **fit_options: Any,
) -> dict[str, Any]:
    """Score a labelled test split and measure detection; save RUN_DIR/detect-eval.json.

    Normal images are those of the run's ``normal_classes`` (matched by class name when
    ``dataset`` is another dataset), or of ``normal_classes`` when given; all other
    labelled images are anomalous. Writes ``figures/detect-roc.png`` and
    ``figures/detect-scores.png`` and refreshes ``report.html``.
    """
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    from convae.data import load_dataset  # noqa: PLC0415
    from convae.train import pick_device  # noqa: PLC0415

    run_dir = Path(run_dir)
    config = _read_run_config(run_dir)
    cfg = _training_config(config)
    spec = dataset or cfg.dataset
    channels, height, width = config["model"]["input_shape"]
    data = load_dataset(spec, "test", data_dir=cfg.data_dir, channels=channels, image_size=(height, width))
    normal = _normal_indices(config, data, normal_classes, spec)
    known = data.labels >= 0
    if not bool(known.all()):
        data = data.subset(known)
        if log:
            log(f"left out {int((~known).sum())} unlabelled images")
    labels = (~torch.isin(data.labels, torch.tensor(normal, dtype=torch.int64))).numpy().astype(np.int64)
    if threshold is None:
        threshold = resolve_threshold(run_dir, value=threshold_value, score=score, device=device, log=log,
                                      **fit_options)
    target = pick_device(device)
    model, _ = load_model(run_dir, target)
    index = run_code_index(run_dir, model, device=target, log=log) if threshold.score == HYBRID else None
    scores = score_images(model, data.images, threshold.score, batch_size=batch_size, device=target, index=index)
    result: dict[str, Any] = {
        "run": str(run_dir),
        "dataset": spec,
        "split": "test",
        "score": threshold.score,
        "normal_classes": [data.classes[i] for i in normal],
        **detection_metrics(scores, labels, threshold.value),
        "threshold_fit": threshold.to_dict(),
    }
    per_class = {}
    normal_mask = labels == 0
    for index, name in enumerate(data.classes):
        if index in normal:
            continue
        mask = data.labels.numpy() == index
        if mask.any():
            keep = mask | normal_mask
            per_class[name] = float(roc_auc_score(labels[keep], scores[keep]))
    result["auroc_per_anomalous_class"] = per_class
    if figures:
        result["figures"] = [str(p) for p in detection_figures(scores, labels, threshold, run_dir / FIGURES,
                                                              title=f"{config['model']['name']} on {spec}")]
    write_json(run_dir / EVAL_FILE, result)
    if report:
        from convae.report import write_report  # noqa: PLC0415

        result["report"] = str(write_report(run_dir))
    return result


def _normal_indices(config: dict[str, Any], data: ImageSet, given: Sequence[int] | None, spec: str) -> list[int]:
    if given is not None:
        bad = [c for c in given if not 0 <= c < len(data.classes)]
        if bad:
            raise ConvaeError(f"--normal-classes {bad[0]} is not a class of {spec} (0..{len(data.classes) - 1})")
        return sorted(set(int(c) for c in given))
    names = normal_class_names(config)
    if names is None:
        raise ConvaeError("the run was trained on every class, so nothing marks images as anomalous; "
                          "pass --normal-classes")
    missing = [n for n in names if n not in data.classes]
    if missing:
        raise ConvaeError(f"{spec} has no class named {missing[0]!r} (the run's normal class); pass --normal-classes")
    return sorted(data.classes.index(n) for n in names)


def detection_figures(scores: np.ndarray, labels: np.ndarray, threshold: Threshold, folder: Path,
                      title: str = "") -> list[Path]:
    """The ROC curve (with the operating point of the threshold) and score histograms."""
    from sklearn.metrics import roc_auc_score, roc_curve  # noqa: PLC0415

    from convae.viz import plt, save_figure  # noqa: PLC0415

    fpr, tpr, _ = roc_curve(labels, scores)
    auroc = roc_auc_score(labels, scores)
    flagged = verdicts(scores, threshold.value)
    point = (flagged[labels == 0].mean(), flagged[labels == 1].mean())
    fig, axis = plt.subplots(figsize=(4.6, 4.4))
    axis.plot(fpr, tpr, label=f"{threshold.score} score, AUROC {auroc:.4f}")
    axis.plot([0, 1], [0, 1], ":", color="gray", label="chance")
    axis.plot(*point, "o", color="crimson", label=f"threshold {threshold.value:.4g}")
    axis.set_xlabel("false positive rate (normal flagged)")
    axis.set_ylabel("true positive rate (anomalies flagged)")
    axis.set_title(title or "ROC curve", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    roc_path = save_figure(fig, folder / "detect-roc.png")

    fig, axis = plt.subplots(figsize=(5.6, 3.6))
    bins = np.histogram_bin_edges(scores, bins=60)
    axis.hist(scores[labels == 0], bins=bins, alpha=0.6, density=True, label=f"normal ({(labels == 0).sum()})")
    axis.hist(scores[labels == 1], bins=bins, alpha=0.6, density=True, label=f"anomalous ({(labels == 1).sum()})")
    axis.axvline(threshold.value, color="crimson", linestyle="--", label=f"threshold ({threshold.method})")
    axis.set_xlabel(f"anomaly score ({threshold.score})")
    axis.set_ylabel("density")
    axis.set_title(title or "anomaly scores", fontsize=10)
    axis.legend(fontsize=8)
    hist_path = save_figure(fig, folder / "detect-scores.png")
    return [roc_path, hist_path]
