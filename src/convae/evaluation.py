"""Evaluate and draw a trained run: the verbs that take a run directory.

These glue the layers together (run directory → model + its data → metrics/figures),
so the CLI and Python users share one code path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from convae.data import ImageSet, load_dataset
from convae.errors import ConvaeError
from convae.metrics import reconstruction_metrics
from convae.models import code_values
from convae.runs import FIGURES, load_model, read_metrics, write_json
from convae.train import TrainConfig, pick_device


def load_run_split(config: dict[str, Any], split: str) -> ImageSet:
    """The images a run was trained on, loaded as its config describes."""
    if split not in ("train", "test"):
        raise ConvaeError(f"--split must be train or test, got {split!r}")
    cfg = TrainConfig.from_dict(config["training"])
    return load_dataset(cfg.dataset, split, data_dir=cfg.data_dir, channels=cfg.channels, image_size=cfg.image_size)


def evaluate_run(run_dir: str | Path, *, split: str = "test", batch_size: int = 256, device: str = "auto") -> dict[str, Any]:
    """Metrics of a run on one split; also saved as RUN_DIR/eval-SPLIT.json."""
    run_dir = Path(run_dir)
    target = pick_device(device)
    model, config = load_model(run_dir, target)
    data = load_run_split(config, split)
    result = {"run": str(run_dir), "dataset": config["dataset"]["spec"], "model": config["model"]["name"]}
    result.update(reconstruction_metrics(model, data, batch_size=batch_size, device=target))
    write_json(run_dir / f"eval-{split}.json", result)
    return result


def show_run(run_dir: str | Path, *, n: int = 5, device: str = "auto") -> list[Path]:
    """Write the reconstruction figure and the loss curve; return their paths."""
    from convae import viz  # noqa: PLC0415

    if n < 1:
        raise ConvaeError(f"-n must be at least 1, got {n}")
    run_dir = Path(run_dir)
    target = pick_device(device)
    model, config = load_model(run_dir, target)
    data = load_run_split(config, "test")
    count = min(n, len(data))
    images = data.images[:count].to(target).float().div(255)
    with torch.no_grad():
        codes = code_values(model.encode(images)).float().cpu()
        outputs = model(images).float().clamp(0, 1).cpu()
    figures = run_dir / FIGURES
    paths = [
        viz.reconstruction_figure(
            images.cpu(), codes, outputs, figures / "reconstructions.png",
            title=f"{config['model']['name']} on {config['dataset']['spec']}: first {count} test images",
        )
    ]
    rows = read_metrics(run_dir)
    if rows:
        paths.append(viz.loss_figure(rows, figures / "loss.png", loss_name=config["training"].get("loss", "loss")))
    return paths
