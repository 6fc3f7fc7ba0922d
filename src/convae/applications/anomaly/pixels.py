"""Pixel-level detection metrics for inspection data: pixel AUROC and AUPRO.

Pixel AUROC is scikit-learn's ``roc_auc_score`` over every pixel of every test image
(defect pixels positive). AUPRO is the MVTec AD benchmark's per-region overlap: at each
threshold, PRO is the mean over connected defect regions (scipy.ndimage.label, 8-connected)
of the share of the region's pixels above the threshold; it is integrated over the false
positive rate of normal pixels from 0 to ``FPR_LIMIT`` and divided by ``FPR_LIMIT``, so a
perfect map scores 1. Unlike pixel AUROC it weighs a small defect as much as a large one.
The curve is exact: every distinct map value is a threshold.
"""

from __future__ import annotations

import numpy as np
import torch

#: The false positive rate AUPRO integrates up to (MVTec AD's choice).
FPR_LIMIT = 0.3


def _flat(maps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(maps, dtype=np.float64)
    truth = np.asarray(masks) > 0
    if scores.shape != truth.shape:
        raise ValueError(f"maps of shape {scores.shape} for masks of shape {truth.shape}")
    return scores, truth


def pixel_auroc(maps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray) -> float:
    """AUROC over all pixels (N×H×W maps against 0/1 masks)."""
    from sklearn.metrics import roc_auc_score

    scores, truth = _flat(maps, masks)
    return float(roc_auc_score(truth.reshape(-1), scores.reshape(-1)))


def pro_curve(maps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate of normal pixels, mean per-region overlap) at every threshold, FPR rising."""
    from scipy import ndimage

    scores, truth = _flat(maps, masks)
    regions = np.zeros(truth.shape, dtype=np.int64)
    count = 0
    for i in range(len(truth)):
        labelled, found = ndimage.label(truth[i], structure=np.ones((3, 3), dtype=int))
        regions[i] = np.where(labelled > 0, labelled + count, 0)
        count += found
    if count == 0:
        raise ValueError("AUPRO needs at least one defect region in the masks")
    normal = ~truth
    if not normal.any():
        raise ValueError("AUPRO needs normal pixels in the masks")
    flat_scores, flat_regions = scores.reshape(-1), regions.reshape(-1)
    order = np.argsort(-flat_scores, kind="stable")
    sorted_scores, sorted_regions = flat_scores[order], flat_regions[order]
    sizes = np.bincount(flat_regions, minlength=count + 1).astype(np.float64)
    # Each defect pixel adds 1 / (its region's size · regions) to the mean overlap once it is above the threshold.
    gain = np.where(sorted_regions > 0, 1.0 / (sizes[sorted_regions] * count), 0.0)
    pro = np.cumsum(gain)
    fpr = np.cumsum(sorted_regions == 0) / normal.sum()
    last = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(sorted_scores) - 1]  # ties: one threshold
    return np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]


def aupro(maps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray, fpr_limit: float = FPR_LIMIT) -> float:
    """Area under the PRO curve up to ``fpr_limit``, divided by ``fpr_limit`` (1 is perfect)."""
    fpr, pro = pro_curve(maps, masks)
    end = np.searchsorted(fpr, fpr_limit, side="right")
    xs, ys = fpr[:end], pro[:end]
    if end < len(fpr):  # close the area exactly at the limit
        x0, x1, y0, y1 = fpr[end - 1], fpr[end], pro[end - 1], pro[end]
        ys = np.r_[ys, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0) if x1 > x0 else y1]
        xs = np.r_[xs, fpr_limit]
    return float(np.trapezoid(ys, xs) / fpr_limit)
