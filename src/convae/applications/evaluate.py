"""``convae evaluate``: a run's metrics on one split, through the run's own model and data.

Reconstruction runs get MSE, RMSE, PSNR, SSIM, BCE, L1 and the MSE per class; restoration
runs (denoise, colorize) the same keys next to the corrupted input's and a classical
baseline's (convae.applications.restore). The result is also stored as
``RUN_DIR/eval-SPLIT.json`` and appears in the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convae.core.device import pick_device
from convae.metrics import reconstruction_metrics
from convae.run import AUTOENCODER, Run


def evaluate_run(run_dir: str | Path | Run, *, split: str = "test", batch_size: int = 256, device: str = "auto") -> dict[str, Any]:
    """Metrics of a run on one split; also saved as RUN_DIR/eval-SPLIT.json."""
    run = Run.of(run_dir, kind=AUTOENCODER, verb="convae evaluate")
    target = pick_device(device)
    model, config = run.model(target), run.config
    splits = run.splits()
    data = splits.measured(splits.split(split))  # a patch run: the same fixed patches the training log used
    result = {"run": str(run.path), "dataset": config["dataset"]["spec"], "model": config.model_name}
    if config.tiling.tiled:
        result["measured_on"] = f"{config.tiling.measured_on(len(data), len(splits.split(split)))} of the {split} split"
    if config.reconstructs:
        result.update(reconstruction_metrics(model, data, batch_size=batch_size, device=target))
    else:
        # Denoise/colorize: the same keys, plus the input's and a classical baseline's scores.
        # The split is corrupted in the trainer's chunks (max(batch_size, 256)), so batch_size is unused.
        from convae.applications.restore import evaluate_restoration

        result.update(evaluate_restoration(run, data, device=target))
    run.write_json(f"eval-{split}.json", result)
    return result
