"""Anomaly detection with a trained autoencoder: reconstruction error as the anomaly score.

An autoencoder trained only on normal images reconstructs them well and anomalies badly.
This package turns a run into a detector, one job per module:

* ``scores``: per image and per pixel errors (``ssim``, ``mse``, ``l1``, ``hybrid``);
* ``index``: the normal training codes behind the ``hybrid`` score;
* ``threshold``: decision thresholds fitted on held-out normal images;
* ``detect``: ``convae detect`` on files and folders, with a CSV and heatmaps;
* ``evaluate``: AUROC, AP and F1 on a labelled split; ``figures``: heatmaps, ROC, histograms;
* ``report``: the anomaly section of the run's report.
"""

from convae.applications.anomaly import report as _report  # noqa: F401 - registers the report section
from convae.applications.anomaly.detect import (
    ANOMALOUS,
    CSV_COLUMNS,
    NORMAL,
    UNREADABLE,
    Detection,
    ImageResult,
    detect_paths,
    write_csv,
)
from convae.applications.anomaly.evaluate import EVAL_FILE, detection_metrics, evaluate_detection
from convae.applications.anomaly.figures import detection_figures, write_heatmap
from convae.applications.anomaly.index import CodeIndex, build_code_index, cached_code_index
from convae.applications.anomaly.runs import normal_splits, open_detector_run
from convae.applications.anomaly.scores import (
    DEFAULT_SCORE,
    HYBRID,
    PIXEL_KINDS,
    SCORE_KINDS,
    check_score_kind,
    error_maps,
    maps_from,
    reconstruct,
    run_code_index,
    score_images,
    score_kinds,
)
from convae.applications.anomaly.threshold import (
    THRESHOLD_FILE,
    THRESHOLD_METHODS,
    Threshold,
    f1_optimal_threshold,
    fit_run_threshold,
    fit_threshold,
    load_threshold,
    resolve_threshold,
    validation_data,
    verdicts,
)

__all__ = [
    "ANOMALOUS", "CSV_COLUMNS", "DEFAULT_SCORE", "EVAL_FILE", "HYBRID", "NORMAL", "PIXEL_KINDS", "SCORE_KINDS",
    "THRESHOLD_FILE", "THRESHOLD_METHODS", "UNREADABLE", "CodeIndex", "Detection", "ImageResult", "Threshold",
    "build_code_index", "cached_code_index", "check_score_kind", "detect_paths", "detection_figures",
    "detection_metrics", "error_maps", "evaluate_detection", "f1_optimal_threshold", "fit_run_threshold",
    "fit_threshold", "load_threshold", "maps_from", "normal_splits", "open_detector_run", "reconstruct",
    "resolve_threshold", "run_code_index", "score_images", "score_kinds", "validation_data", "verdicts",
    "write_csv", "write_heatmap",
]
