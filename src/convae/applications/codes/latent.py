"""``convae show --latent``: the 2-D map of test codes and interpolations between two codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from convae.applications.codes.format import SwitchLevel
from convae.applications.codes.io import dataset_images, open_code_run, sample_images
from convae.applications.codes.quantize import encode_batches, flat_indices
from convae.core.device import pick_device
from convae.models import SwitchedCode
from convae.run import Run


def project_2d(flat: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """N×D codes → N×2 with PCA or t-SNE (scikit-learn)."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(flat)
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(flat) - 1) // 3)))
    return TSNE(n_components=2, random_state=seed, init="pca", perplexity=perplexity).fit_transform(flat)


@torch.no_grad()
def show_latent(run_dir: str | Path | Run, *, n: int = 2000, pairs: int = 4, steps: int = 8, tsne: bool = True,
                device: str = "auto") -> list[Path]:
    """figures/latent_pca.png (+ latent_tsne.png) of ``n`` (seeded random) test codes coloured by class, and
    figures/interpolations.png: ``pairs`` strips decoded along the line between two test codes."""
    from convae.viz import _as_picture, plt, save_figure

    run = open_code_run(run_dir, "convae show --latent")
    target = pick_device(device)
    model = run.model(target)
    data = sample_images(dataset_images(run, None, "test"), n)
    values, switches = encode_batches(model, data.images, target)
    flat = values.flatten(1).numpy().astype(np.float64)
    figures = run.figures
    labels = data.labels.numpy()
    paths = []
    methods = ["pca"] + (["tsne"] if tsne and len(flat) >= 5 else [])
    for method in methods:
        xy = project_2d(flat, method) if len(flat) >= 2 else np.zeros((len(flat), 2))
        fig, axis = plt.subplots(figsize=(6.5, 5.5))
        known = labels >= 0
        if known.any():
            scatter = axis.scatter(xy[known, 0], xy[known, 1], c=labels[known], cmap="tab10", s=6,
                                   vmin=-0.5, vmax=max(9.5, len(data.classes) - 0.5))
            handles = [plt.Line2D([], [], marker="o", linestyle="", color=scatter.cmap(scatter.norm(i)), label=name)
                       for i, name in enumerate(data.classes) if (labels == i).any()]
            axis.legend(handles=handles, fontsize=7, loc="best", markerscale=1.2)
        if (~known).any():
            axis.scatter(xy[~known, 0], xy[~known, 1], c="gray", s=6)
        axis.set_title(f"{'PCA' if method == 'pca' else 't-SNE'} of {len(flat)} test codes "
                       f"({'×'.join(map(str, values.shape[1:]))})")
        axis.set_xticks([])
        axis.set_yticks([])
        paths.append(save_figure(fig, figures / f"latent_{method}.png"))
    if len(data) >= 2:
        paths.append(_interpolation_figure(model, data, values, switches, pairs, steps, figures / "interpolations.png",
                                           target, _as_picture, plt, save_figure))
    return paths


def interpolation_pairs(labels: list[int], pairs: int) -> list[tuple[int, int]]:
    """Image pairs from different classes, each class's first images in turn (0↔1, 2↔3, …).

    Unlabelled data (or a single class) gives consecutive pairs 0↔1, 2↔3, ….
    """
    firsts: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        if label >= 0:
            firsts.setdefault(label, []).append(index)
    classes = list(firsts)
    chosen: list[tuple[int, int]] = []
    if len(classes) >= 2:
        for k in range(pairs):
            a, b = classes[(2 * k) % len(classes)], classes[(2 * k + 1) % len(classes)]
            rank = (2 * k) // len(classes)
            if a != b and rank < len(firsts[a]) and rank < len(firsts[b]):
                chosen.append((firsts[a][rank], firsts[b][rank]))
    if not chosen:
        chosen = [(i, i + 1) for i in range(0, min(2 * pairs, len(labels) - 1), 2)]
    return chosen


def _interpolation_figure(model, data, values, switches, pairs, steps, path, device, as_picture, plt, save_figure):
    """Strips: image A, decodes of (1-t)·code_A + t·code_B for t in [0, 1], image B.

    Pairs are taken from different classes where labels allow. Unpool presets interpolate the
    values and keep image A's switches up to t = 0.5 and B's after (switches are discrete).
    """
    chosen = interpolation_pairs(data.labels.tolist(), pairs)
    ts = torch.linspace(0, 1, steps)
    fig, axes = plt.subplots(len(chosen), steps + 2, figsize=(1.3 * (steps + 2), 1.45 * len(chosen)), squeeze=False)
    for row, (a, b) in enumerate(chosen):
        mix = (1 - ts).view(-1, *[1] * (values.dim() - 1)) * values[a] + ts.view(-1, *[1] * (values.dim() - 1)) * values[b]
        if switches:
            pairs_ = []
            for level in switches:
                rows = np.stack([level.positions[a] if t <= 0.5 else level.positions[b] for t in ts.tolist()])
                pairs_.append((flat_indices(SwitchLevel(rows, level.kernel, level.pre_size)).to(device),
                               torch.Size(level.pre_size)))
            code = SwitchedCode(mix.to(device), tuple(pairs_))
        else:
            code = mix.to(device)
        decoded = model.decode(code).float().clamp(0, 1).cpu()
        pictures = [data.images[a].float() / 255, *decoded, data.images[b].float() / 255]
        for column, picture in enumerate(pictures):
            axis = axes[row][column]
            image, cmap = as_picture(picture)
            axis.imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title("A" if column == 0 else "B" if column == steps + 1 else f"t={ts[column - 1]:.2f}",
                               fontsize=7)
    fig.suptitle("decoded along the line between two test codes")
    return save_figure(fig, path)


