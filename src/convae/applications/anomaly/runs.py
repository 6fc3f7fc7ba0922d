"""The runs a detector is made from, and their held-out normal images.

Thresholds and the hybrid score's standardisation are fitted on the run's validation
split: normal images it never trained on (convae.run.splits makes them).
"""

from __future__ import annotations

from pathlib import Path

from convae.core.errors import ConvaeError
from convae.run import AUTOENCODER, Run, Splits


def open_detector_run(run_dir: str | Path | Run, verb: str = "convae detect") -> Run:
    """An autoencoder run that reconstructs its input (colorize runs do not)."""
    run = Run.of(run_dir, kind=AUTOENCODER, verb=verb)
    if run.config.task == "colorize":
        raise ConvaeError(f"{run.path}: a colorize run does not reconstruct its input; anomaly scores need a "
                          "reconstruct or denoise run")
    return run


def normal_splits(run: Run) -> Splits:
    """The run's splits, checked to hold normal validation images."""
    if not run.config.training.val_fraction:
        raise ConvaeError(
            f"{run.path}: this run kept no validation split (val_fraction 0), so there are no held-out normal "
            "images to fit a threshold (or the hybrid score) on; train with --normal-classes (keeps 10%) or "
            "--val-fraction, or pass --threshold"
        )
    splits = run.splits()
    if splits.val is None or len(splits.val) == 0:
        raise ConvaeError(f"{run.path}: the validation split is empty; use a larger --val-fraction")
    return splits


def run_tile(run: Run) -> tuple[int, int] | None:
    """The tile size whole images go through a patch-trained run in (its patch), else None."""
    return run.config.tiling.tile
