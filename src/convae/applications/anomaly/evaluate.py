"""Measuring detection on a labelled split: AUROC, average precision, F1 at the threshold.

Results go to ``RUN_DIR/detect-eval.json``, with a ROC curve and score histograms in
``RUN_DIR/figures/``; the anomaly section of the report shows them. Metrics come from
scikit-learn (``roc_auc_score``, ``average_precision_score``, ``precision_recall_fscore_support``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from convae.applications.anomaly.figures import detection_figures, gallery_figure
from convae.applications.anomaly.pixels import FPR_LIMIT, aupro, pixel_auroc
from convae.applications.anomaly.report import EVAL_FILE
from convae.applications.anomaly.runs import open_detector_run, run_tile
from convae.applications.anomaly.scores import HYBRID, run_code_index, score_images
from convae.applications.anomaly.threshold import Threshold, resolve_threshold, verdicts
from convae.core.device import pick_device
from convae.core.errors import ConvaeError
from convae.data import ImageSet, load_dataset
from convae.run import Run, RunConfig
from convae.run.splits import class_indices, class_listing


def detection_metrics(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray,
                      threshold: float | None = None) -> dict[str, Any]:
    """AUROC, average precision and (at ``threshold``) precision, recall, F1 and counts.

    ``labels``: 1 = anomalous (the positive class), 0 = normal. Uses scikit-learn.
    """
    from sklearn.metrics import (
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
    run_dir: str | Path | Run,
    *,
    dataset: str | None = None,
    normal_classes: Sequence[int | str] | None = None,
    threshold: Threshold | None = None,
    threshold_value: float | None = None,
    score: str | None = None,
    device: str = "auto",
    batch_size: int = 256,
    figures: bool = True,
    log: Callable[[str], None] | None = None,
    **fit_options: Any,
) -> dict[str, Any]:
    """Score a labelled test split and measure detection; save RUN_DIR/detect-eval.json.

    Normal images are those of the run's ``normal_classes`` (matched by class name when
    ``dataset`` is another dataset), or of ``normal_classes`` when given; all other
    labelled images are anomalous. Writes ``figures/detect-roc.png`` and
    ``figures/detect-scores.png``; the report's anomaly section shows them.
    """
    run = open_detector_run(run_dir)
    config, spec, tile = run.config, dataset or run.config.training.dataset, run_tile(run)
    data = _test_split(run, dataset, spec)
    normal = _normal_indices(config, data, normal_classes, spec)
    eval_file = _eval_file(run, data, normal, normal_classes, log)
    if log:
        log(class_listing(list(data.classes), normal))
    known = data.labels >= 0
    if not bool(known.all()):
        data = data.subset(known)
        if log:
            log(f"left out {int((~known).sum())} unlabelled images")
    labels = (~torch.isin(data.labels, torch.tensor(normal, dtype=torch.int64))).numpy().astype(np.int64)
    if threshold is None:
        threshold = resolve_threshold(run, value=threshold_value, score=score, device=device, log=log,
                                      **fit_options)
    target = pick_device(device)
    model = run.model(target)
    code_index = run_code_index(run, model, device=target, log=log) if threshold.score == HYBRID else None
    maps = None
    if data.masks is not None or tile is not None:  # pixel metrics, or maps at full resolution for the gallery
        scores, maps = score_images(model, data.images, threshold.score, batch_size=batch_size, device=target,
                                    index=code_index, with_maps=True, tile=tile)
    else:
        scores = score_images(model, data.images, threshold.score, batch_size=batch_size, device=target,
                              index=code_index)
    result: dict[str, Any] = {
        "run": str(run.path), "dataset": spec, "split": "test", "score": threshold.score,
        "normal_classes": [data.classes[i] for i in normal],
        **detection_metrics(scores, labels, threshold.value),
        "threshold_fit": threshold.to_dict(),
        "auroc_per_anomalous_class": _auroc_per_class(scores, labels, data, normal),
    }
    if data.masks is not None and maps is not None:
        result.update(segmentation_metrics(maps, data.masks, data.labels.numpy(), normal, list(data.classes)))
    if figures and eval_file == EVAL_FILE:
        result["figures"] = [str(p) for p in detection_figures(scores, labels, threshold, run.figures,
                                                              title=f"{config.model_name} on {spec}")]
        result["figures"].append(str(gallery_figure(
            model, data.images, scores, labels, list(data.classes), data.labels.numpy(), threshold,
            run.figures / "detect-gallery.png", index=code_index, device=target, maps=maps,
            masks=data.masks)))
    result["file"] = str(run.write_json(eval_file, result))
    return result


def _test_split(run: Run, dataset: str | None, spec: str) -> ImageSet:
    """The run's own test split, or another dataset's converted to the run's input (a patch run: its channels)."""
    if dataset is None:
        return run.splits().test
    cfg, tile = run.config.training, run_tile(run)
    channels, height, width = run.config.input_shape
    return load_dataset(spec, "test", data_dir=run.data_dir or cfg.data_dir, channels=channels,
                        image_size=cfg.image_size if tile else (height, width), any_size=tile is not None)


def _eval_file(run: Run, data: ImageSet, normal: list[int], given: Sequence[int | str] | None,
               log: Callable[[str], None] | None) -> str:
    """detect-eval.json, or, for another question than the run's own, a file beside it (never over it)."""
    own, chosen = run.config.normal_class_names(), [data.classes[i] for i in normal]
    if given is None or chosen == own:
        return EVAL_FILE
    eval_file = EVAL_FILE.replace(".json", f"-normal-{'-'.join(map(str, normal))}.json")
    if log:
        log(f"warning: evaluating with normal classes {', '.join(chosen)}, not the run's own "
            f"({', '.join(own) if own else 'every class'}); writing {run.path / eval_file}, the stored "
            f"evaluation is kept")
    return eval_file


def _auroc_per_class(scores: np.ndarray, labels: np.ndarray, data: ImageSet, normal: list[int]) -> dict[str, float]:
    """Each anomalous class's AUROC against all the normal images."""
    from sklearn.metrics import roc_auc_score

    per_class, normal_mask = {}, labels == 0
    for class_index, name in enumerate(data.classes):
        mask = data.labels.numpy() == class_index
        if class_index not in normal and mask.any():
            keep = mask | normal_mask
            per_class[name] = float(roc_auc_score(labels[keep], scores[keep]))
    return per_class


def segmentation_metrics(maps: torch.Tensor, masks: torch.Tensor, class_labels: np.ndarray, normal: list[int],
                         classes: list[str]) -> dict[str, Any]:
    """Pixel AUROC and AUPRO over the whole test split and per defect type (with the normal images)."""
    result: dict[str, Any] = {"pixel_auroc": pixel_auroc(maps, masks), "aupro": aupro(maps, masks),
                              "aupro_fpr_limit": FPR_LIMIT}
    is_normal = np.isin(class_labels, normal)
    per_auroc, per_aupro = {}, {}
    for class_index, name in enumerate(classes):
        chosen = class_labels == class_index
        if class_index in normal or not chosen.any() or not bool(masks[torch.from_numpy(chosen)].any()):
            continue
        keep = torch.from_numpy(chosen | is_normal)
        per_auroc[name] = pixel_auroc(maps[keep], masks[keep])
        per_aupro[name] = aupro(maps[keep], masks[keep])
    result["pixel_auroc_per_anomalous_class"] = per_auroc
    result["aupro_per_anomalous_class"] = per_aupro
    return result


def _normal_indices(config: RunConfig, data: ImageSet, given: Sequence[int | str] | None, spec: str) -> list[int]:
    if given is not None:
        return class_indices(list(given), list(data.classes), spec)
    names = config.normal_class_names()
    if names is None:
        raise ConvaeError("the run was trained on every class, so nothing marks images as anomalous; "
                          "pass --normal-classes")
    missing = [n for n in names if n not in data.classes]
    if missing:
        raise ConvaeError(f"{spec} has no class named {missing[0]!r} (the run's normal class); pass --normal-classes")
    return sorted(data.classes.index(n) for n in names)


