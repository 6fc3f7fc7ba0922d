"""``convae show``: originals, codes and reconstructions of test images, and the loss curve."""

from __future__ import annotations

from pathlib import Path

import torch

from convae.core.device import pick_device
from convae.core.errors import ConvaeError
from convae.models import code_values
from convae.run import AUTOENCODER, Run


def show_run(run_dir: str | Path | Run, *, n: int = 5, device: str = "auto") -> list[Path]:
    """Write the reconstruction figure (restoration runs: corrupted / restored / clean) and the loss curve."""
    from convae import viz  # noqa: PLC0415

    if n < 1:
        raise ConvaeError(f"-n must be at least 1, got {n}")
    run = Run.of(run_dir, kind=AUTOENCODER, verb="convae show")
    target = pick_device(device)
    model, config = run.model(target), run.config
    data = run.splits().test
    if config.task != "reconstruct":
        from convae.applications.restore import show_restoration  # noqa: PLC0415

        paths = [show_restoration(run, model, data, run.figures / "restorations.png", n, target)]
    else:
        count = min(n, len(data))
        images = data.images[:count].to(target).float().div(255)
        with torch.no_grad():
            codes = code_values(model.encode(images)).float().cpu()
            outputs = model(images).float().clamp(0, 1).cpu()
        paths = [viz.reconstruction_figure(
            images.cpu(), codes, outputs, run.figures / "reconstructions.png",
            title=f"{config.model_name} on {config['dataset']['spec']}: first {count} test images",
        )]
    rows = run.metrics()
    if rows:
        paths.append(viz.loss_figure(rows, run.figures / "loss.png", loss_name=config["training"].get("loss", "loss")))
    return paths
