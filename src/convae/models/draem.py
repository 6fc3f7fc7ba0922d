"""DRAEM's two networks: a reconstructive autoencoder without skips and a discriminative U-Net.

Zavrtanik, Kristan & Skočaj, "DRAEM – A discriminatively trained reconstruction embedding for
surface anomaly detection" (ICCV 2021); layouts after the authors' reference code
(github.com/VitjanZ/DRAEM, model_unet.py, checked against it), narrowed for two CPU cores:

* ``draem-recon`` (ReconstructiveSubNetwork): double 3×3 conv–BN–ReLU blocks with four 2×2
  max-pools down (widths b, 2b, 4b, 8b, 8b) and bilinear upsampling back, *no* skip
  connections, so a painted defect cannot be copied through; no output activation.
* :func:`discriminator` (DiscriminativeSubNetwork): a U-Net over [image, reconstruction]
  (2·C channels) whose two output channels are the defect logits (normal, defect).

``draem`` is both in one model (:class:`DraemModel`), the network of a ``--task inspect`` run:
``forward`` is the reconstruction (so every reconstruction verb works on it) and
:meth:`DraemModel.defect_map` the segmentation. ``draem-large`` has the reference's widths
(128 and 64) for GPUs at MVTec's 256×256; ``draem`` is sized for two CPU cores at 128×128
(see docs/inspect.md). All take any size: inputs are padded by replication to a multiple
of 16 and the outputs cropped back.
"""

from __future__ import annotations

import torch
from torch import nn

from convae.core.errors import ModelError
from convae.models.autoencoder import PaddedAutoEncoder
from convae.models.blocks import UNet
from convae.models.registry import register

Shape = tuple[int, int, int]
MULTIPLE = 16


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                         nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@register(
    "draem-recon",
    params={"width": 24},
    training={"loss": "mse", "batch_size": 8, "epochs": 100, "lr": 1e-3},
    summary="DRAEM's reconstructive sub-network: double conv blocks, four max-pools, bilinear upsampling, no "
            "skips, no output activation; any size in, the same size out",
)
def build_draem_recon(input_shape: Shape, out_channels: int, *, width: int) -> PaddedAutoEncoder:
    if width < 1:
        raise ModelError(f"draem-recon needs width >= 1, got {width}")
    b, c = width, input_shape[0]
    encoder = nn.Sequential(_double_conv(c, b), nn.MaxPool2d(2), _double_conv(b, 2 * b), nn.MaxPool2d(2),
                            _double_conv(2 * b, 4 * b), nn.MaxPool2d(2), _double_conv(4 * b, 8 * b), nn.MaxPool2d(2),
                            _double_conv(8 * b, 8 * b))
    decoder = nn.Sequential(_up(8 * b, 8 * b), _double_conv(8 * b, 4 * b), _up(4 * b, 4 * b),
                            _double_conv(4 * b, 2 * b), _up(2 * b, 2 * b), _double_conv(2 * b, b), _up(b, b),
                            _double_conv(b, b), nn.Conv2d(b, out_channels, 3, padding=1))
    return PaddedAutoEncoder(encoder, decoder)


def discriminator(in_channels: int, width: int = 16, levels: int = 4) -> UNet:
    """The discriminative U-Net: [image, reconstruction] (``in_channels``) → two defect logits per pixel."""
    if width < 1 or not 1 <= levels <= 4:
        raise ModelError(f"the discriminator needs width >= 1 and 1 to 4 levels, got {width}, {levels}")
    widths = [width * min(2 ** i, 8) for i in range(levels + 1)]
    head = _double_conv(in_channels, widths[0])  # built in this order, so a seed initialises them as before
    downs = [nn.Sequential(nn.MaxPool2d(2), _double_conv(widths[i], widths[i + 1])) for i in range(levels)]
    ups = [_up(widths[i + 1], widths[i]) for i in range(levels)]
    merges = [_double_conv(2 * widths[i], widths[i]) for i in range(levels)]
    return UNet(head, downs, ups, merges, nn.Conv2d(widths[0], 2, 3, padding=1), MULTIPLE)


class DraemModel(PaddedAutoEncoder):
    """DRAEM as one module: the reconstructive network's encoder and decoder, and the discriminator.

    ``forward(x)`` reconstructs (what reconstruction verbs and scores use); ``forward(x,
    segment=True)`` also returns the discriminator's two logits per pixel, in one call, so a
    DDP-wrapped model trains both networks through its own forward.
    """

    takes_color_head = False  # its input is the image it segments, never a gray one

    def __init__(self, reconstructive: PaddedAutoEncoder, discriminative: nn.Module) -> None:
        super().__init__(reconstructive.encoder, reconstructive.decoder)
        self.discriminator = discriminative

    def forward(self, x: torch.Tensor, segment: bool = False):  # type: ignore[override]
        reconstruction = super().forward(x)
        if not segment:
            return reconstruction
        return reconstruction, self.discriminator(torch.cat([x, reconstruction], dim=1))

    def defect_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the defect probability per pixel N×H×W, the reconstruction N×C×H×W).

        The discriminator sees the reconstruction clamped to the pixel range [0, 1]. The
        reconstructive network has no output activation, and on a defect unlike anything it
        trained on it can overshoot far out of range everywhere: one run of the tiny square test
        redrew its squared parts between −0.8 and 4.4, so the discriminator marked good pixels as
        much as the squares (pixel AUROC 0.25; clamped, 0.82 with the same weights). Training
        passes the reconstruction as it is; this acts at inference only, and with the same weights
        it left 18 of 22 trained runs' pixel AUROC the same to three decimals and raised the other
        4 (docs/inspect.md, "Reconstructions out of range").
        """
        reconstruction = super().forward(x)
        logits = self.discriminator(torch.cat([x, reconstruction.clamp(0, 1)], dim=1))
        return torch.softmax(logits.float(), dim=1)[:, 1], reconstruction


def _build_draem(input_shape: Shape, out_channels: int, *, width: int, disc_width: int) -> DraemModel:
    if out_channels != input_shape[0]:
        raise ModelError(f"draem reconstructs its input: {input_shape[0]} channel(s) in, {out_channels} out")
    reconstructive = build_draem_recon(input_shape, out_channels, width=width)
    return DraemModel(reconstructive, discriminator(2 * input_shape[0], disc_width))


#: What a --task inspect run trains with (DRAEM: Adam, batch 8, L2 + SSIM + focal loss, cosine), in fp32.
#: --precision auto (bf16 where the device has bf16 units, with channels-last) made a step at 128×128 1.8×
#: faster on 2 CPU cores, but runs that used it failed more often; see docs/inspect.md.
INSPECT_TRAINING = {"loss": "mse", "batch_size": 8, "lr_schedule": "cosine"}


@register(
    "draem",
    params={"width": 16, "disc_width": 12},
    # 60 epochs of 72 parts at 128×128 take 7–9 minutes on 2 cores (2026-12-07); lr 3e-3, not the reference's
    # 1e-4, because 10 minutes is 60 epochs, not 700. Whole parts: 64×64 crops (4× the steps) ranked
    # parts no better on two validation sets and two seeds (both chosen there, docs/inspect.md). Runs
    # from before --crop stored none and take this default: changing it changes how they resume.
    training={**INSPECT_TRAINING, "epochs": 60, "lr": 3e-3, "crop": 0},
    summary="DRAEM for --task inspect, CPU size: draem-recon (no skips) + a discriminative U-Net on "
            "[image, reconstruction] giving defect logits; trained on simulated defects",
)
def build_draem(input_shape: Shape, out_channels: int, *, width: int, disc_width: int) -> DraemModel:
    return _build_draem(input_shape, out_channels, width=width, disc_width=disc_width)


@register(
    "draem-large",
    params={"width": 128, "disc_width": 64},
    training={**INSPECT_TRAINING, "lr": 1e-4, "epochs": 700, "crop": 0},  # whole parts, as the reference
    summary="DRAEM for --task inspect at the reference's widths (128, 64), for GPUs at MVTec's 256×256",
)
def build_draem_large(input_shape: Shape, out_channels: int, *, width: int, disc_width: int) -> DraemModel:
    return _build_draem(input_shape, out_channels, width=width, disc_width=disc_width)


#: The presets a --task inspect run trains (and the only ones it takes).
INSPECT_PRESETS = frozenset({"draem", "draem-large"})


#: DRAEM's image score: the defect map mean-pooled over 21×21 (stride 1, padding 10) at 256×256, then
#: its maximum (test_DRAEM.py: avg_pool2d(out_mask_sm[:, 1:], 21, stride=1, padding=21 // 2), np.max).
POOL, POOL_AT = 21, 256


def pool_size(height: int, width: int) -> int:
    """The pooling window for parts of H×W: the reference's 21 px at 256 px, scaled with the part
    (11 at 128×128), so it spans the same share of the part; odd, at least 1."""
    scaled = round(POOL * min(int(height), int(width)) / POOL_AT)  # int(): a traced size is a constant of the graph
    return max(1, scaled if scaled % 2 else scaled + 1)


def pooled_peak(maps: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """The image scores (N) of defect maps (N×H×W): the largest value of each map after mean pooling
    over ``size`` px (by default :func:`pool_size`; another size is for comparing windows)."""
    size = pool_size(*maps.shape[-2:]) if size is None else size
    pooled = torch.nn.functional.avg_pool2d(maps[:, None].float(), size, stride=1, padding=size // 2)
    return pooled.flatten(1).amax(1)
