"""Restoration: denoising and colorization with a trained run, measured against baselines.

A restoration run (``convae train --task denoise|colorize``) learned ``corrupted → clean``.
``evaluate`` scores it next to doing nothing and a classical baseline (evaluate.py,
baselines.py, with the split corrupted exactly as in training: corrupted.py);
``show`` draws corrupted / restored / clean rows; ``convae denoise`` and ``colorize``
restore your own files (files.py).
"""

from convae.applications.restore import report as _report  # noqa: F401 - registers the report section
from convae.applications.restore.baselines import (
    COLOUR_LEVELS,
    GAUSSIAN_SIGMAS,
    MEDIAN_SIZES,
    ColourTable,
    DenoiseFilter,
    choose_denoise_filter,
    denoise_candidates,
    fit_colour_table,
    gaussian_filter,
    median_filter,
)
from convae.applications.restore.corrupted import (
    EVAL_TAG,
    RESTORE_TASKS,
    VAL_TAG,
    as_output,
    corrupted_batches,
    eval_chunk,
    run_corruption,
)
from convae.applications.restore.evaluate import (
    MAX_BASELINE_IMAGES,
    comparison_rows,
    evaluate_restoration,
    image_rows_figure,
    restoration_metrics,
    show_restoration,
    validation_images,
)
from convae.applications.restore.files import SizePlan, plan_size, restore_files, restore_tensor

__all__ = [
    "COLOUR_LEVELS", "EVAL_TAG", "GAUSSIAN_SIGMAS", "MAX_BASELINE_IMAGES", "MEDIAN_SIZES", "RESTORE_TASKS", "VAL_TAG",
    "ColourTable", "DenoiseFilter", "SizePlan", "as_output", "choose_denoise_filter", "comparison_rows",
    "corrupted_batches", "denoise_candidates", "eval_chunk", "evaluate_restoration", "fit_colour_table",
    "gaussian_filter", "image_rows_figure", "median_filter", "plan_size", "restoration_metrics", "restore_files",
    "restore_tensor", "run_corruption", "show_restoration", "validation_images",
]
