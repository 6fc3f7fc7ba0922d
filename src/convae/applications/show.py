"""``convae show``: originals, codes and reconstructions of test images, and the loss curve."""

from __future__ import annotations

from pathlib import Path

import torch

from convae.core.device import pick_device
from convae.core.errors import ConvaeError
from convae.models import code_values
from convae.run import AUTOENCODER, Run
from convae.run.config import inspection_dataset


def show_run(run_dir: str | Path | Run, *, n: int = 5, device: str = "auto") -> list[Path]:
    """Write the reconstruction figure (restoration runs: corrupted / restored / clean) and the loss curve."""
    from convae import viz

    if n < 1:
        raise ConvaeError(f"-n must be at least 1, got {n}")
    run = Run.of(run_dir, kind=AUTOENCODER, verb="convae show")
    target = pick_device(device)
    model, config = run.model(target), run.config
    splits = run.splits()
    data = splits.measured(splits.test)  # a patch run: fixed patches of the test images
    if not config.reconstructs:
        from convae.applications.restore import show_restoration

        paths = [show_restoration(run, model, data, run.figures / "restorations.png", n, target)]
    else:
        picked = pick_examples(data.labels.tolist(), n)
        count = len(picked)
        images = data.images[picked].to(target).float().div(255)
        names = [data.classes[label] if 0 <= label < len(data.classes) else "" for label in data.labels[picked].tolist()]
        with torch.no_grad():
            codes = code_values(model.encode(images)).float().cpu()
            outputs = model(images).float().clamp(0, 1).cpu()
        paths = [viz.reconstruction_figure(
            images.cpu(), codes, outputs, run.figures / "reconstructions.png",
            title=f"{config.model_name} on {config['dataset']['spec']}: {count} test images", labels=names,
        )]
    rows = run.metrics()
    if rows:
        paths.append(viz.loss_figure(rows, run.figures / "loss.png", loss_name=config["training"].get("loss", "loss")))
    return paths


def pick_examples(labels: list[int], n: int) -> list[int]:
    """Which test images to draw: the first ``n`` (as the reference figures do) when they show
    enough classes, else the first image of each class in turn (a folder split sorted by class
    would otherwise show one class only)."""
    n = min(n, len(labels))
    classes = sorted({label for label in labels if label >= 0})
    if len({label for label in labels[:n] if label >= 0}) >= min(n, len(classes)):
        return list(range(n))
    by_class = {c: [i for i, label in enumerate(labels) if label == c] for c in classes}
    picked: list[int] = []
    for rank in range(n):
        for c in classes:
            if len(picked) < n and rank < len(by_class[c]):
                picked.append(by_class[c][rank])
    return sorted(picked)


@torch.no_grad()
def show_classes(run_dir: str | Path | Run, *, device: str = "auto", most: int = 20) -> Path | None:
    """figures/reconstructions-per-class.png: the first test image of every class (up to ``most``),
    its code and its reconstruction. None for data without classes, runs that do not reconstruct,
    and inspection data, whose classes are defect types that a random patch would not show."""
    from convae import viz

    run = Run.of(run_dir, kind=AUTOENCODER, verb="convae report")
    if run.config.task != "reconstruct" or inspection_dataset(run.config.training.dataset):
        return None  # an inspection run's report shows whole parts with their maps (detect --eval's gallery)
    splits = run.splits()
    data = splits.measured(splits.test)
    labels = data.labels.tolist()
    firsts = [labels.index(c) for c in range(len(data.classes)) if c in labels][:most]
    if len(firsts) < 2:
        return None
    target = pick_device(device)
    model = run.model(target)
    images = data.images[firsts].to(target).float().div(255)
    codes = code_values(model.encode(images)).float().cpu()
    outputs = model(images).float().clamp(0, 1).cpu()
    return viz.reconstruction_figure(
        images.cpu(), codes, outputs, run.figures / "reconstructions-per-class.png",
        title=f"{run.config.model_name} on {run.config['dataset']['spec']}: one test image of each class",
        labels=[data.classes[labels[i]] for i in firsts],
    )
