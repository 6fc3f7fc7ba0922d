"""Reconstruction metrics with the conventions the reference numbers use.

Pixels are in [0, 1] and every error is a mean per pixel, so our RMSE is directly
comparable with the published ones: RMSE = sqrt(mean squared error per pixel) over the
whole split, computed on the raw model output as the reference example does. SSIM
comes from torchmetrics rather than a hand-written window.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

from convae.data import Batches, ImageSet


def ssim_kernel(height: int, width: int) -> int:
    """The usual 11-pixel Gaussian window, shrunk (odd) for images smaller than that."""
    size = min(11, height, width)
    return size if size % 2 else size - 1


def batch_ssim(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per image (a vector of length N), data range 1."""
    kernel = max(ssim_kernel(*target.shape[-2:]), 1)
    return structural_similarity_index_measure(
        output.clamp(0, 1).float(), target.float(), data_range=1.0, kernel_size=kernel, reduction="none"
    )


def psnr_from_mse(mse: float) -> float:
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


@torch.no_grad()
def reconstruction_metrics(
    model: torch.nn.Module,
    data: ImageSet,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """MSE, RMSE, PSNR, SSIM, BCE and L1 over ``data``, plus the MSE of each class."""
    model.eval()
    n_classes = max(len(data.classes), 1)
    sums = {"mse": 0.0, "l1": 0.0, "bce": 0.0, "ssim": 0.0}
    class_sse = torch.zeros(n_classes, dtype=torch.float64)
    class_count = torch.zeros(n_classes, dtype=torch.float64)
    labels = data.labels
    offset = 0
    for x in Batches(data.images, batch_size, shuffle=False, seed=0, device=device):
        out = model(x).float()
        per_image_mse = (out - x).pow(2).flatten(1).mean(1).double().cpu()
        sums["mse"] += per_image_mse.sum().item()
        sums["l1"] += (out - x).abs().flatten(1).mean(1).double().sum().item()
        clipped = out.clamp(1e-7, 1 - 1e-7)
        sums["bce"] += F.binary_cross_entropy(clipped, x, reduction="none").flatten(1).mean(1).double().sum().item()
        sums["ssim"] += batch_ssim(out, x).double().sum().item()
        batch_labels = labels[offset : offset + x.shape[0]]
        known = batch_labels >= 0
        if known.any():
            class_sse.index_add_(0, batch_labels[known], per_image_mse[known])
            class_count.index_add_(0, batch_labels[known], torch.ones(int(known.sum()), dtype=torch.float64))
        offset += x.shape[0]
    n = max(len(data), 1)
    mse = sums["mse"] / n
    per_class = {
        name: class_sse[i].item() / class_count[i].item()
        for i, name in enumerate(data.classes)
        if class_count[i] > 0
    }
    return {
        "split": data.split,
        "images": len(data),
        "mse": mse,
        "rmse": math.sqrt(mse),
        "psnr": psnr_from_mse(mse),
        "ssim": sums["ssim"] / n,
        "bce": sums["bce"] / n,
        "l1": sums["l1"] / n,
        "per_class_mse": per_class,
        "conventions": "pixels in [0,1]; mean per pixel; MSE/RMSE/PSNR on the raw output, SSIM/BCE on it clipped to [0,1]",
    }
