"""Rate–distortion training: what a codec run adds to the one loop.

The loss is CompressAI's convention, ``λ·255²·MSE + bpp`` (``RateDistortionLoss`` in
compressai/losses/rate_distortion.py): MSE of [0, 1] pixels, and the rate as the latents'
negative log2-likelihood per pixel position of the input image (H×W, not H×W×C), so
λ on CompressAI's ladder (0.0018 … 0.18) lands near its published rates. The noise that
stands in for rounding comes from the step's seeded generator, so a resumed run draws what
the uninterrupted one drew. No auxiliary loss is needed: the coder's tables, tails
included, are computed from the weights whenever the run encodes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from convae.data import Batches, ImageSet
from convae.metrics import psnr_from_mse
from convae.run.config import TrainConfig, rd_lambda
from convae.run.splits import Splits
from convae.training.tasks import ReconstructTask, Task


def bits_per_pixel(likelihoods: list[torch.Tensor], pixels: int) -> torch.Tensor:
    """The rate estimate: −log2 of every latent's likelihood, summed, per pixel position."""
    return sum(-torch.log2(v.float()).sum() for v in likelihoods) / pixels


def rd_loss(x_hat: torch.Tensor, x: torch.Tensor, likelihoods: list[torch.Tensor], lam: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(λ·255²·MSE + bpp, bpp) of one batch."""
    bpp = bits_per_pixel(likelihoods, x.shape[0] * x.shape[2] * x.shape[3])
    return lam * 255 ** 2 * F.mse_loss(x_hat.float(), x) + bpp, bpp


class RateDistortionTask(ReconstructTask):
    """A codec (the codec presets) trained against rate + λ·distortion."""

    #: Per-epoch sum beyond the loss: the training batches' estimated bpp.
    extra_sums = 1

    def __init__(self, config: TrainConfig, splits: Splits, device: torch.device) -> None:
        Task.__init__(self, config, splits, device)  # not ReconstructTask's: an rd:λ loss has no loss_function
        self.lam = float(rd_lambda(config.loss))  # type: ignore[arg-type]
        self.loss_fn = F.mse_loss
        self.corruption = None

    def loss(self, net, x, y, generator, autocast):
        with autocast:
            x_hat, likelihoods = net(x, likelihoods=True, generator=generator())
        loss, bpp = rd_loss(x_hat, x, likelihoods, self.lam)
        return loss, (bpp.detach() * len(x)).view(1)

    @torch.no_grad()
    def _measure(self, model: torch.nn.Module, data: ImageSet) -> dict[str, float]:
        """Rounded latents, as the coder will see them: MSE, the rate estimate and the loss."""
        was_training = model.training
        model.eval()
        images = self.splits.measured(data).images
        squared = bits = 0.0
        pixels = 0
        for x in Batches(images, max(self.config.batch_size, 64), shuffle=False, seed=0, device=self.device):
            x_hat, likelihoods = model(x, likelihoods=True)
            squared += float(F.mse_loss(x_hat.clamp(0, 1), x, reduction="sum"))
            bits += float(bits_per_pixel(likelihoods, 1))
            pixels += x.shape[0] * x.shape[2] * x.shape[3]
        model.train(was_training)
        mse = squared / (pixels * images.shape[1])
        bpp = bits / pixels
        return {"loss": self.lam * 255 ** 2 * mse + bpp, "mse": mse, "bpp": bpp, "psnr": psnr_from_mse(mse)}

    def row(self, model, epoch, train_loss, extras, seen, seconds, lr):
        test = self._measure(model, self.splits.test)
        val = self._measure(model, self.splits.val) if self.splits.val is not None else None
        return {
            "epoch": epoch, "train_loss": train_loss,
            "train_bpp_estimate": extras[0] / max(seen, 1) if extras else None,
            "test_loss": test["loss"], "test_bpp_estimate": test["bpp"], "test_psnr": test["psnr"],
            "test_mse": test["mse"],
            **({"val_loss": val["loss"], "val_bpp_estimate": val["bpp"], "val_psnr": val["psnr"]} if val else {}),
            "seconds": round(seconds, 4),
            "images_per_s": round(seen / seconds, 1) if seconds > 0 else None,
            "loss": self.config.loss,
        }

    def epoch_line(self, row: dict[str, Any]) -> str:
        psnr = row["test_psnr"]
        return (f"epoch {row['epoch']}/{self.config.epochs}  train {self.config.loss} {row['train_loss']:.4f}  "
                f"test {row['test_bpp_estimate']:.3f} bpp (estimate), {psnr:.2f} dB"
                f"{'' if math.isfinite(psnr) else ' (lossless)'}  {row['seconds']:.1f}s  "
                f"{row['images_per_s'] or 0:,.0f} img/s")
