"""Pictures of detection: heatmap overlays per image, the ROC curve and score histograms."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from convae.applications.anomaly.threshold import Threshold, verdicts
from convae.core.images import write_png


def write_heatmap(
    path: Path, image: torch.Tensor, output: torch.Tensor, error: torch.Tensor, *, scale: float, caption: str = ""
) -> Path:
    """A PNG of three panels: the input, its reconstruction, the error map over the input.

    Errors are drawn with the 'inferno' colormap from 0 to ``scale`` (the 99.9th percentile
    of per-pixel errors on normal validation images), blended over the gray input with an
    opacity that grows with the error, so heat means "worse than almost any normal pixel".
    """
    from PIL import Image, ImageDraw

    def rgb(t: torch.Tensor) -> np.ndarray:
        t = t.float().clamp(0, 1)
        t = t.expand(3, -1, -1) if t.shape[0] == 1 else t[:3]
        return t.permute(1, 2, 0).numpy()

    base = rgb(image)
    heat = overlay(image, error, scale)
    height, width = heat.shape[:2]
    zoom = max(1, math.ceil(112 / max(height, width)))
    gap = np.ones((height, max(1, width // 14), 3))
    strip = np.concatenate([base, gap, rgb(output), gap, heat], axis=1)
    picture = Image.fromarray((strip * 255).round().astype(np.uint8))
    picture = picture.resize((picture.width * zoom, picture.height * zoom), Image.NEAREST)
    if caption:
        canvas = Image.new("RGB", (picture.width, picture.height + 14), "white")
        canvas.paste(picture, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), caption, fill=(0, 0, 0))
        picture = canvas
    return write_png(path, np.asarray(picture))


def write_overlay(path: Path, image: torch.Tensor, error: torch.Tensor, *, scale: float, title: str = "",
                  mask_level: float | None = None, label: str = "per-pixel error") -> Path:
    """The error map over the image at the image's own resolution, with a labelled colour bar.

    ``mask_level`` outlines the predicted defect (pixels above it) in cyan and writes that
    mask beside the figure as ``<name>_mask.png`` (white = defect), at the image's size.
    """
    from convae.viz import plt, save_figure

    height, width = error.shape[-2:]
    dpi = 100
    inches_w, inches_h = max(width / dpi, 3.0), max(height / dpi, 3.0 * height / width)
    fig = plt.figure(figsize=(inches_w * 1.18, inches_h + 0.45), dpi=dpi)
    axis = fig.add_axes((0.0, 0.0, 1 / 1.18, inches_h / (inches_h + 0.45)))
    axis.imshow(overlay(image, error, scale), interpolation="nearest")
    axis.set_axis_off()
    if mask_level is not None:
        mask = (error > mask_level).numpy()
        if mask.any():
            axis.contour(mask.astype(np.float32), levels=[0.5], colors="cyan", linewidths=1.0)
        write_png(path.with_name(f"{path.stem}_mask.png"), mask.astype(np.uint8) * 255)
    bar_axis = fig.add_axes((1 / 1.18 + 0.02, 0.08, 0.035, 0.8 * inches_h / (inches_h + 0.45)))
    from matplotlib import cm, colors

    bar = fig.colorbar(cm.ScalarMappable(norm=colors.Normalize(0, scale), cmap="inferno"), cax=bar_axis)
    bar.set_label(label + (" (cyan: predicted defect)" if mask_level is not None else ""), fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if title:
        fig.text(0.01, 1 - 0.3 / (inches_h + 0.45), title, fontsize=9, va="center")
    return save_figure(fig, path, dpi=dpi)


def detection_figures(scores: np.ndarray, labels: np.ndarray, threshold: Threshold, folder: Path,
                      title: str = "") -> list[Path]:
    """The ROC curve (with the operating point of the threshold) and score histograms."""
    from sklearn.metrics import roc_auc_score, roc_curve

    from convae.viz import plt, save_figure

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


def overlay(image: torch.Tensor, error: torch.Tensor, scale: float) -> np.ndarray:
    """H×W×3: the gray input with the error map over it in 'inferno', opacity growing with the error."""
    from matplotlib import colormaps

    t = image.float().clamp(0, 1)
    base = (t.expand(3, -1, -1) if t.shape[0] == 1 else t[:3]).permute(1, 2, 0).numpy()
    gray = base.mean(2, keepdims=True).repeat(3, 2)
    level = np.clip(error.float().numpy() / max(scale, 1e-12), 0.0, 1.0)
    alpha = (0.25 + 0.75 * level)[..., None]
    return (1 - alpha) * gray + alpha * colormaps["inferno"](level)[..., :3]


@torch.no_grad()
def gallery_figure(model: torch.nn.Module, images: torch.Tensor, scores: np.ndarray, labels: np.ndarray,
                   classes: list[str], class_labels: np.ndarray, threshold: Threshold, path: Path, *,
                   index: object = None, count: int = 6, device: torch.device | str = "cpu",
                   maps: torch.Tensor | None = None, masks: torch.Tensor | None = None) -> Path:
    """The ``count`` most and least anomalous images of a split, each with its error map over it.

    ``maps``: the split's error maps when already drawn (a patch run's come from tiles);
    ``masks``: true defect masks, outlined in green.
    """
    from convae.applications.anomaly.scores import error_maps
    from convae.viz import plt, save_figure

    order = np.argsort(scores)
    count = min(count, len(order) // 2 or 1)
    picked = np.concatenate([order[::-1][:count], order[:count]])
    chosen = torch.from_numpy(picked.copy())
    x = images[chosen].to(device).float().div(255)
    maps = maps[chosen] if maps is not None else error_maps(model, x, threshold.score, index)[1]
    scale = threshold.heatmap_scale or float(maps.max().clamp(min=1e-8))
    fig, axes = plt.subplots(2, count, figsize=(1.9 * count, 4.6), squeeze=False)
    for slot, i in enumerate(picked):
        axis = axes[slot // count][slot % count]
        axis.imshow(overlay(x[slot].cpu(), maps[slot].cpu(), scale), interpolation="nearest")
        if masks is not None and bool(masks[i].any()):
            axis.contour(masks[i].numpy().astype(np.float32), levels=[0.5], colors="lime", linewidths=0.8)
        truth = classes[class_labels[i]] if 0 <= class_labels[i] < len(classes) else "?"
        flagged = bool(scores[i] > threshold.value)
        right = flagged == bool(labels[i] == 1)
        axis.set_title(f"{scores[i]:.3g} · {truth}\n{'anomalous' if flagged else 'normal'}, {'right' if right else 'wrong'}",
                       fontsize=7)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0][0].set_ylabel("most anomalous", fontsize=8)
    axes[1][0].set_ylabel("least anomalous", fontsize=8)
    fig.suptitle(f"{threshold.score} score; threshold {threshold.value:.4g}", fontsize=9)
    return save_figure(fig, path)
