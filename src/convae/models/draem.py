"""DRAEM's two networks: a reconstructive autoencoder without skips and a discriminative U-Net.

Zavrtanik, Kristan & Skočaj, "DRAEM – A discriminatively trained reconstruction embedding for
surface anomaly detection" (ICCV 2021); layouts after the authors' reference code
(github.com/VitjanZ/DRAEM, model_unet.py, checked against it), narrowed for two CPU cores:

* ``draem-recon`` (ReconstructiveSubNetwork): double 3×3 conv–BN–ReLU blocks with four 2×2
  max-pools down (widths b, 2b, 4b, 8b, 8b) and bilinear upsampling back, *no* skip
  connections, so a painted defect cannot be copied through; no output activation.
* :func:`discriminator` (DiscriminativeSubNetwork): a U-Net over [image, reconstruction]
  (2·C channels) whose two output channels are the defect logits (normal, defect).

The reference trains at 256×256 with widths 128 and 64; the defaults here (24 and 16) are the
CPU sizes. Both take any size: inputs are padded by replication to a multiple of 16 and the
outputs cropped back.
"""

from __future__ import annotations

from torch import nn

from convae.core.errors import ModelError
from convae.models.autoencoder import AutoEncoder, PaddedAutoEncoder
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
def build_draem_recon(input_shape: Shape, out_channels: int, *, width: int) -> AutoEncoder:
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
