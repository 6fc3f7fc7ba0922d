"""Scoring a restoration run: the model next to doing nothing and a classical baseline.

PSNR/SSIM of the restored images against the clean ones, next to the corrupted input
itself (for colorization the gray image replicated to RGB) and a classical baseline whose
one parameter is chosen on validation images (convae.applications.restore.baselines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from convae.applications.restore.baselines import (
    DenoiseFilter,
    Filter,
    choose_denoise_filter,
    denoise_candidates,
    fit_colour_table,
)
from convae.applications.restore.corrupted import as_output, corrupted_batches, eval_chunk, run_corruption
from convae.data import ImageSet
from convae.data.corrupt import Corruption
from convae.metrics import ReconstructionMetrics, psnr_from_mse
from convae.run import Run

#: At most this many validation images choose/fit the baseline (they are a random sample).
MAX_BASELINE_IMAGES = 2000


@torch.no_grad()
def restoration_metrics(
    model: torch.nn.Module,
    data: ImageSet,
    corruption: Corruption,
    *,
    seed: int,
    chunk: int,
    baselines: dict[str, Filter],
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Scores of the model, of the corrupted input and of each named baseline on ``data``.

    Returns the model's ``mse rmse psnr ssim bce l1 per_class_mse`` (as reconstruction
    does), ``input_*`` for the input and ``{name}_*`` for each baseline.
    """
    model.eval()
    scores = {"model": ReconstructionMetrics(classes=max(len(data.classes), 1)), "input": ReconstructionMetrics(),
              **{name: ReconstructionMetrics() for name in baselines}}
    offset = 0
    for clean, x_in in corrupted_batches(data.images, corruption, seed, chunk, device):
        scores["model"].add(model(x_in), clean, data.labels[offset : offset + clean.shape[0]])
        scores["input"].add(as_output(x_in, clean.shape[1]), clean)
        for name, apply in baselines.items():
            scores[name].add(apply(x_in), clean)
        offset += clean.shape[0]
    result: dict[str, Any] = {"split": data.split, "images": len(data)}
    model_scores = scores.pop("model")
    result.update(model_scores.summary())
    result["per_class_mse"] = model_scores.per_class(list(data.classes))
    for name, score in scores.items():
        summary = score.summary()
        for key in ("mse", "psnr", "ssim"):
            result[f"{name}_{key}"] = summary[key]
    return result


def validation_images(run: Run) -> tuple[ImageSet, str]:
    """The validation split the run held out, or (val_fraction 0) a seeded 10% of its training split.

    Only the baseline's parameter is chosen on it. Returns the images (at most
    MAX_BASELINE_IMAGES) and a description.
    """
    val, own = run.splits().held_out(0.1)
    where = "the run's validation split" if own else "a seeded 10% of the training split"
    if len(val) > MAX_BASELINE_IMAGES:
        val = val.subset(range(MAX_BASELINE_IMAGES))
    return val, f"{len(val)} images of {where}"


def evaluate_restoration(run: Run, data: ImageSet, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Everything ``convae evaluate`` reports for a denoise or colorize run (see the package doc)."""
    config = run.config
    model = run.model(device)
    corruption = run_corruption(run)
    seed = int(config["training"].get("seed", 0))
    chunk = eval_chunk(run)
    val, val_where = validation_images(run)
    task = config.task
    result: dict[str, Any] = {"task": task, "corruption": str(corruption)}
    if task == "denoise":
        choice = choose_denoise_filter(val.images, corruption, seed, chunk, device)
        best: DenoiseFilter = choice["best"]
        families = {family: DenoiseFilter(family, info["param"]) for family, info in choice["families"].items()}
        metrics = restoration_metrics(model, data, corruption, seed=seed, chunk=chunk, device=device,
                                      baselines={"baseline": best, **{f"_{k}": f for k, f in families.items()}})
        result["input"] = f"the noisy input ({corruption})"
        result["baseline"] = f"{best}, the best of {len(denoise_candidates())} filters on {val_where}"
        result["baselines"] = {
            family: {"filter": str(families[family]), "param": info["param"], "val_psnr": info["val_psnr"],
                     "psnr": metrics.pop(f"_{family}_psnr"), "ssim": metrics.pop(f"_{family}_ssim"),
                     "mse": metrics.pop(f"_{family}_mse")}
            for family, info in choice["families"].items()
        }
        result["baseline_val_psnr"] = choice["val_psnr"]
    else:
        table = fit_colour_table(val.images, device=device)
        metrics = restoration_metrics(model, data, corruption, seed=seed, chunk=chunk, device=device,
                                      baselines={"baseline": table})
        result["input"] = "the gray input replicated to RGB"
        result["baseline"] = f"gray + the {table}, fitted on {val_where}"
    result.update(metrics)
    if corruption.high is not None:  # blind noise: the model and the input at fixed levels of the range
        result["per_level"] = [
            {"noise": str(level), **{k: m[k] for k in ("psnr", "ssim", "input_psnr", "input_ssim")}}
            for level in corruption.levels()
            for m in [restoration_metrics(model, data, level, seed=seed, chunk=chunk, baselines={}, device=device)]]
    result["conventions"] = (
        "pixels in [0,1]; mean per pixel; PSNR from the split's mean MSE; the model scored on its raw output, SSIM "
        f"on it clipped to [0,1]; the split corrupted as in training's test loss (chunks of {chunk}, seed {seed})"
    )
    return result


def comparison_rows(result: dict[str, Any]) -> list[tuple[str, float, float, float]]:
    """(what, MSE, PSNR, SSIM) for the input, the baseline and the model, in that order."""
    return [
        (f"input: {result['input']}", result["input_mse"], result["input_psnr"], result["input_ssim"]),
        (f"baseline: {result['baseline']}", result["baseline_mse"], result["baseline_psnr"], result["baseline_ssim"]),
        ("convae", result["mse"], result["psnr"], result["ssim"]),
    ]


# -- figures -----------------------------------------------------------------------------------


@torch.no_grad()
def show_restoration(
    run: Run, model: torch.nn.Module, data: ImageSet, path: Path, n: int, device: torch.device | str
) -> Path:
    """Rows of corrupted / restored / clean for the first ``n`` images of ``data``."""
    config = run.config
    corruption = run_corruption(run)
    chunk = eval_chunk(run)
    seed = int(config["training"].get("seed", 0))
    count = min(n, len(data), chunk)
    clean, x_in = next(corrupted_batches(data.images[:chunk], corruption, seed, chunk, device))
    clean, x_in = clean[:count], x_in[:count]
    restored = model(x_in).float().clamp(0, 1)
    rows = [
        ("gray input" if config.task == "colorize" else f"noisy ({corruption})", x_in.cpu()),
        ("restored", restored.cpu()),
        ("clean", clean.cpu()),
    ]
    title = f"{config.task}: {config['model']['name']} on {config['dataset']['spec']}, first {count} test images"
    return image_rows_figure(rows, path, title=title, psnr=[_psnr_each(x, clean) for _, x in rows[:2]])


def _psnr_each(estimate: torch.Tensor, clean: torch.Tensor) -> list[float]:
    estimate = as_output(estimate.to(clean.device), clean.shape[1])
    mse = (estimate - clean).pow(2).flatten(1).mean(1)
    return [psnr_from_mse(v) for v in mse.tolist()]


def image_rows_figure(
    rows: Sequence[tuple[str, torch.Tensor]], path: Path, title: str = "", psnr: Sequence[Sequence[float]] = ()
) -> Path:
    """A grid: one labelled row per tensor N×C×H×W in [0,1]; optional PSNR under the first rows."""
    import matplotlib.pyplot as plt

    from convae import viz

    count = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), count, figsize=(1.8 * count, 1.9 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for column in range(count):
            axis = axes[r][column]
            image = images[column]
            if image.shape[0] == 1:
                axis.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                axis.imshow(image[:3].permute(1, 2, 0).numpy(), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if r < len(psnr):
                axis.set_xlabel(f"{psnr[r][column]:.1f} dB", fontsize=8)
            if column == 0:
                axis.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return viz.save_figure(fig, Path(path))


