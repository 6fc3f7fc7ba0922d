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
    task = config.get("task", "reconstruct")
    result = {"run": str(run_dir), "dataset": config["dataset"]["spec"], "model": config["model"]["name"]}
    if task == "reconstruct":
        result.update(reconstruction_metrics(model, data, batch_size=batch_size, device=target))
    else:
        # Denoise/colorize: the same keys, plus the input's and a classical baseline's scores.
        # The split is corrupted in the trainer's chunks (max(batch_size, 256)), so batch_size is unused.
        from convae.applications.restore import evaluate_restoration  # noqa: PLC0415

        result.update(evaluate_restoration(model, config, data, device=target))
    write_json(run_dir / f"eval-{split}.json", result)
    return result


def show_run(run_dir: str | Path, *, n: int = 5, device: str = "auto") -> list[Path]:
    """Write the reconstruction figure (restoration runs: corrupted / restored / clean) and the loss curve."""
    from convae import viz  # noqa: PLC0415

    if n < 1:
        raise ConvaeError(f"-n must be at least 1, got {n}")
    run_dir = Path(run_dir)
    target = pick_device(device)
    model, config = load_model(run_dir, target)
    data = load_run_split(config, "test")
    figures = run_dir / FIGURES
    if config.get("task", "reconstruct") != "reconstruct":
        from convae.applications.restore import show_restoration  # noqa: PLC0415

        paths = [show_restoration(model, config, data, figures / "restorations.png", n, target)]
        rows = read_metrics(run_dir)
        if rows:
            paths.append(viz.loss_figure(rows, figures / "loss.png", loss_name=config["training"].get("loss", "loss")))
        return paths
    count = min(n, len(data))
    images = data.images[:count].to(target).float().div(255)
    with torch.no_grad():
        codes = code_values(model.encode(images)).float().cpu()
        outputs = model(images).float().clamp(0, 1).cpu()
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
