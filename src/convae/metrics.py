"""Reconstruction metrics with the conventions the reference numbers use.

Pixels are in [0, 1] and every error is a mean per pixel, so our RMSE is directly
comparable with the published ones: RMSE = sqrt(mean squared error per pixel) over the
whole split, computed on the raw model output as the reference example does. SSIM
comes from torchmetrics rather than a hand-written window.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from convae.data import Batches, ImageSet


def ssim_kernel(height: int, width: int) -> int:
    """The usual 11-pixel Gaussian window, shrunk (odd) for images smaller than that."""
    size = min(11, height, width)
    return size if size % 2 else size - 1


#: torchmetrics' Gaussian SSIM window: σ 1.5, 11 taps (int(3.5σ + 0.5)·2 + 1), whatever kernel_size says.
SSIM_SIGMA, SSIM_TAPS = 1.5, 11
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # (k·data range)², data range 1


def ssim_map(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Local SSIM per pixel and channel (N×C×H×W), exactly torchmetrics' ``return_full_image`` map.

    Why a second spelling of torchmetrics' formula: anomaly maps go into exported ONNX
    graphs, and torchmetrics builds its window from the traced channel count, which the
    exporter cannot turn into a convolution. Here the window is a constant of the known
    channel count. tests/test_export.py checks that both agree on every pixel.
    """
    channels = int(output.shape[1])
    half = (SSIM_TAPS - 1) // 2
    steps = torch.arange((1 - SSIM_TAPS) / 2, (1 + SSIM_TAPS) / 2, step=1, dtype=output.dtype, device=output.device)
    gauss = torch.exp(-torch.pow(steps / SSIM_SIGMA, 2) / 2)
    gauss = (gauss / gauss.sum()).unsqueeze(0)
    window = torch.matmul(gauss.t(), gauss).expand(channels, 1, SSIM_TAPS, SSIM_TAPS)
    x = F.pad(output, (half, half, half, half), mode="reflect")
    y = F.pad(target, (half, half, half, half), mode="reflect")
    n = output.shape[0]
    stacked = torch.cat((x, y, x * x, y * y, x * y))
    if torch.jit.is_tracing():  # an exported graph keeps its batch size free: groups must not depend on it
        moments = F.conv2d(stacked, window, groups=channels)
    else:
        # Every (image, moment, channel) plane as a channel of one depthwise convolution: the same sums,
        # to the bit, but oneDNN runs it 4× (3 channels) to 17× (1 channel) faster, forward and
        # backward, than a batch of few-channel convolutions; it was over a quarter of a DRAEM
        # training step on gray parts.
        planes = stacked.reshape(1, -1, *stacked.shape[-2:])
        moments = F.conv2d(planes, window[:1].expand(planes.shape[1], 1, SSIM_TAPS, SSIM_TAPS), groups=planes.shape[1])
        moments = moments.reshape(5 * n, channels, *moments.shape[-2:])
    mu_x, mu_y, xx, yy, xy = moments.reshape(5, n, *moments.shape[1:]).unbind(0)  # not split(n): n is dynamic
    mu_xx, mu_yy, mu_xy = mu_x.pow(2), mu_y.pow(2), mu_x * mu_y
    var_x, var_y = torch.clamp(xx - mu_xx, min=0.0), torch.clamp(yy - mu_yy, min=0.0)
    upper = 2 * (xy - mu_xy) + SSIM_C2
    lower = var_x + var_y + SSIM_C2
    return ((2 * mu_xy + SSIM_C1) * upper) / ((mu_xx + mu_yy + SSIM_C1) * lower)


def batch_ssim(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per image (a vector of length N), data range 1."""
    kernel = max(ssim_kernel(*target.shape[-2:]), 1)
    # torchmetrics costs ~2 s to import: only evaluations that report SSIM pay for it.
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(
        output.clamp(0, 1).float(), target.float(), data_range=1.0, kernel_size=kernel, reduction="none"
    )


def psnr_from_mse(mse: float) -> float:
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def set_psnr_ssim(outputs: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(PSNR of the mean MSE over all images, mean SSIM) of float outputs (clamped to [0, 1]) against
    float targets: how every codec of a rate–distortion table is scored."""
    mse = (outputs.clamp(0, 1) - target).pow(2).flatten(1).mean(1).double()
    ssim = torch.cat([batch_ssim(outputs[i:i + 500], target[i:i + 500]) for i in range(0, len(target), 500)])
    return psnr_from_mse(float(mse.mean())), float(ssim.double().mean())


CONVENTIONS = "pixels in [0,1]; mean per pixel; MSE/RMSE/PSNR on the raw output, SSIM/BCE on it clipped to [0,1]"
MEASURES = ("mse", "l1", "bce", "ssim")


class ReconstructionMetrics:
    """Sums of per-image errors of estimates against clean images, over any number of batches.

    The one accumulator behind ``evaluate``, the restoration comparison and the trainer's
    per-epoch evaluation, so they agree on every definition: each measure is a mean per
    pixel per image, summed in float64 and divided by the image count once at the end.
    ``loss`` adds the training loss as the trainer computes it (mean over the batch's
    pixels, weighted by the batch size); ``classes`` adds the MSE of each labelled class.
    """

    def __init__(self, measures: tuple[str, ...] = MEASURES, *, loss: Callable[[torch.Tensor, torch.Tensor],
                 torch.Tensor] | None = None, classes: int = 0) -> None:
        self.measures = measures
        self.loss_fn = loss
        self.sums = dict.fromkeys(measures, 0.0)
        self.loss_sum: torch.Tensor | None = None
        self.n = 0
        self.class_sse = torch.zeros(classes, dtype=torch.float64)
        self.class_count = torch.zeros(classes, dtype=torch.float64)

    def add(self, estimate: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Add one batch; returns each image's MSE (on the CPU)."""
        if self.loss_fn is not None:
            value = self.loss_fn(estimate, clean).double() * clean.shape[0]
            self.loss_sum = value if self.loss_sum is None else self.loss_sum + value
        estimate = estimate.float()
        if not self.measures and not len(self.class_sse):
            self.n += clean.shape[0]
            return torch.empty(0, dtype=torch.float64)
        per_image = (estimate - clean).pow(2).flatten(1).mean(1).double()
        if "mse" in self.sums:
            self.sums["mse"] += per_image.sum().item()
        if "l1" in self.sums:
            self.sums["l1"] += (estimate - clean).abs().flatten(1).mean(1).double().sum().item()
        if "bce" in self.sums:
            clipped = estimate.clamp(1e-7, 1 - 1e-7)
            self.sums["bce"] += F.binary_cross_entropy(clipped, clean, reduction="none").flatten(1).mean(1).double().sum().item()
        if "ssim" in self.sums:
            self.sums["ssim"] += batch_ssim(estimate, clean).double().sum().item()
        self.n += clean.shape[0]
        per_image = per_image.cpu()
        if labels is not None and len(self.class_sse):
            known = labels >= 0
            if known.any():
                self.class_sse.index_add_(0, labels[known], per_image[known])
                self.class_count.index_add_(0, labels[known], torch.ones(int(known.sum()), dtype=torch.float64))
        return per_image

    @property
    def loss(self) -> float:
        """The mean training loss over every image added (needs ``loss=``)."""
        return 0.0 if self.loss_sum is None else (self.loss_sum / max(self.n, 1)).item()

    def summary(self) -> dict[str, float]:
        n = max(self.n, 1)
        means = {key: value / n for key, value in self.sums.items()}
        if "mse" in means:
            means.update(rmse=math.sqrt(means["mse"]), psnr=psnr_from_mse(means["mse"]))
        return {key: means[key] for key in ("mse", "rmse", "psnr", "ssim", "bce", "l1") if key in means}

    def per_class(self, names: list[str]) -> dict[str, float]:
        return {name: self.class_sse[i].item() / self.class_count[i].item()
                for i, name in enumerate(names) if self.class_count[i] > 0}


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
    metrics = ReconstructionMetrics(classes=max(len(data.classes), 1))
    offset = 0
    for x in Batches(data.images, batch_size, shuffle=False, seed=0, device=device):
        metrics.add(model(x), x, data.labels[offset : offset + x.shape[0]])
        offset += x.shape[0]
    summary = metrics.summary()
    return {
        "split": data.split,
        "images": len(data),
        **{key: summary[key] for key in ("mse", "rmse", "psnr", "ssim", "bce", "l1")},
        "per_class_mse": metrics.per_class(list(data.classes)),
        "conventions": CONVENTIONS,
    }
