"""The linear probe: how much class information survives an autoencoder's bottleneck.

:func:`probe_autoencoder` fits a logistic regression on the codes an autoencoder gives
the training images and scores it on the test images.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from convae.core.device import pick_device
from convae.core.errors import DataError
from convae.data import Batches
from convae.run import AUTOENCODER, Run
from convae.run.config import check
from convae.run.splits import require_labels

Log = Callable[[str], None]


@torch.no_grad()
def _codes(model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    from convae.models import code_values

    chunks = []
    for x in Batches(images, batch_size, shuffle=False, seed=0, device=device):
        chunks.append(code_values(model.encode(x)).flatten(1).float().cpu())
    return torch.cat(chunks)


def probe_autoencoder(
    run_dir: str | Path | Run,
    *,
    limit: int | None = None,
    max_iter: int = 500,
    baseline: bool = False,
    device: str = "auto",
    log: Log | None = None,
) -> dict[str, Any]:
    """Test accuracy of a logistic regression fitted on an autoencoder's codes of the training split.

    Codes are standardised (zero mean, unit variance per feature, fitted on the training
    codes) so lbfgs converges in a few hundred iterations. ``limit`` uses only the first
    N training images (the fit is the slow part); ``baseline`` also fits the same probe on
    the raw pixels, the number a code should be compared with.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    say = log or (lambda message: None)
    run = Run.of(run_dir, kind=AUTOENCODER, verb="convae classify probe")
    check(limit is None or limit >= 2, f"--limit must be at least 2 images, got {limit}")
    check(max_iter >= 1, f"--max-iter must be at least 1, got {max_iter}")
    target = pick_device(device)
    model, config = run.model(target), run.config
    spec = config.dataset_spec
    splits = run.splits()
    train, test = splits.split("train"), splits.split("test")
    require_labels(train)
    require_labels(test)
    if limit is not None and limit < len(train):
        train = train.subset(torch.arange(limit))
    if len(torch.unique(train.labels)) < 2:
        raise DataError(f"{spec}: the probe's training images hold a single class; use a larger --limit")
    started = time.perf_counter()
    train_codes, test_codes = _codes(model, train.images, target), _codes(model, test.images, target)
    say(f"encoded {len(train):,} train and {len(test):,} test images into {train_codes.shape[1]:,}-value codes")

    def fit(features_train: torch.Tensor, features_test: torch.Tensor) -> tuple[float, float, int]:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: reported below as iterations
            probe.fit(features_train.numpy(), train.labels.numpy())
        iterations = int(probe[-1].n_iter_.max())
        return (
            float(probe.score(features_train.numpy(), train.labels.numpy())),
            float(probe.score(features_test.numpy(), test.labels.numpy())),
            iterations,
        )

    train_accuracy, test_accuracy, iterations = fit(train_codes, test_codes)
    counts = torch.bincount(test.labels, minlength=len(test.classes))
    result: dict[str, Any] = {
        "run": str(run.path),
        "model": config["model"]["name"],
        "dataset": spec,
        "code_size": int(train_codes.shape[1]),
        "input_size": int(train.images[0].numel()),
        "train_images": len(train),
        "test_images": len(test),
        "train_accuracy": train_accuracy,
        "test_accuracy": test_accuracy,
        "majority_class_accuracy": float(counts.max().item() / max(len(test), 1)),
        "iterations": iterations,
        "converged": iterations < max_iter,
        "probe": f"StandardScaler + LogisticRegression(lbfgs, max_iter={max_iter}) on the flattened code",
    }
    if baseline:
        pixels_train = train.images.flatten(1).float().div(255)
        pixels_test = test.images.flatten(1).float().div(255)
        _, pixel_accuracy, _ = fit(pixels_train, pixels_test)
        result["pixel_baseline_test_accuracy"] = pixel_accuracy
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def probe_text(result: dict[str, Any]) -> str:
    """The probe result as a few readable lines."""
    lines = [
        f"linear probe on the {result['code_size']:,}-value code of {result['model']} ({result['dataset']}):",
        f"  test accuracy  {100 * result['test_accuracy']:.2f}%  ({result['test_images']:,} test images)",
        f"  train accuracy {100 * result['train_accuracy']:.2f}%  ({result['train_images']:,} train images)",
        f"  majority class {100 * result['majority_class_accuracy']:.2f}%",
    ]
    if "pixel_baseline_test_accuracy" in result:
        lines.append(
            f"  raw pixels     {100 * result['pixel_baseline_test_accuracy']:.2f}%  (same probe on the "
            f"{result['input_size']:,} input values)"
        )
    if not result["converged"]:
        lines.append(f"  note: lbfgs stopped at --max-iter {result['iterations']} before converging")
    return "\n".join(lines)


