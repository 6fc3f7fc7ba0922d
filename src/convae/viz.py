"""Figures, drawn with matplotlib and written atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from convae.core.atomic import atomic_write_bytes


def figure_png(fig: "plt.Figure", dpi: int = 110) -> bytes:
    """The figure as PNG bytes (closed afterwards): for pages that embed it without a file."""
    buffer = io.BytesIO()
    # The PNG text chunk that marks a picture as convae's (convae.core.outputs.PNG_MARK).
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": "convae"})
    plt.close(fig)
    return buffer.getvalue()


def save_figure(fig: "plt.Figure", path: Path, dpi: int = 110) -> Path:
    atomic_write_bytes(Path(path), figure_png(fig, dpi))
    return Path(path)


def _as_picture(image: torch.Tensor) -> tuple[Any, str | None]:
    """C×H×W in [0,1] → something imshow draws (gray for 1 channel)."""
    if image.shape[0] == 1:
        return image[0].numpy(), "gray"
    if image.shape[0] == 3:
        return image.permute(1, 2, 0).numpy(), None
    return image.mean(0).numpy(), "gray"


def code_picture(code: torch.Tensor) -> torch.Tensor:
    """A code drawn as an image: spatial codes as their maps side by side, vectors as a near-square grid."""
    if code.dim() == 3:  # C×H×W: tile the maps horizontally, each scaled to [0,1]
        maps = [(m - m.min()) / (m.max() - m.min() + 1e-8) for m in code]
        return torch.cat(maps, dim=1)
    flat = code.flatten()
    width = int(flat.numel() ** 0.5 + 0.999)
    height = -(-flat.numel() // width)
    padded = torch.zeros(height * width)
    padded[: flat.numel()] = (flat - flat.min()) / (flat.max() - flat.min() + 1e-8)
    return padded.reshape(height, width)


def reconstruction_figure(
    originals: torch.Tensor, codes: torch.Tensor, outputs: torch.Tensor, path: Path, title: str = "",
    labels: list[str] | None = None,
) -> Path:
    """Rows of originals, codes and reconstructions, as in the reference figure."""
    count = originals.shape[0]
    fig, axes = plt.subplots(3, count, figsize=(1.8 * count, 5.6), squeeze=False)
    for column in range(count):
        for row, (label, picture) in enumerate(
            [
                ("original", _as_picture(originals[column])),
                (f"code {'×'.join(map(str, codes.shape[1:]))}", (code_picture(codes[column]).numpy(), "viridis")),
                ("reconstruction", _as_picture(outputs[column])),
            ]
        ):
            axis = axes[row][column]
            data, cmap = picture
            axis.imshow(data, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(label)
            if row == 0 and labels:
                axis.set_title(labels[column], fontsize=9)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def loss_figure(rows: list[dict[str, Any]], path: Path, loss_name: str = "loss") -> Path:
    """Train, validation and test loss per epoch (classifier runs: train and validation)."""
    fig, axis = plt.subplots(figsize=(5.5, 3.6))
    epochs = [row["epoch"] for row in rows]
    for key, marker, label in (("train_loss", "o-", "train"), ("val_loss", "^-", "validation"),
                               ("test_loss", "s-", "test")):
        values = [row.get(key) for row in rows]
        if any(v is not None for v in values):
            axis.plot(epochs, [float("nan") if v is None else v for v in values], marker, label=label)
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel(f"{loss_name} (mean per pixel)")
    axis.grid(alpha=0.3)
    axis.legend()
    return save_figure(fig, path)
