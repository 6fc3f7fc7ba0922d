"""Restoration presets: residual denoisers that predict the noise, not the image.

A reconstruction autoencoder must re-synthesise every pixel through its code and a Sigmoid,
which cost the photo denoiser a colour cast and several dB against non-local means
(benchmarks/results/photo_denoise.md). Residual learning makes the identity free: the
network predicts the noise and the output is the input minus it (Zhang et al., "Beyond a
Gaussian Denoiser: Residual Learning of Deep CNN for Image Denoising", TIP 2017; the layout
of IRCNN, Zhang et al., CVPR 2017: seven 3×3 convolutions with dilations 1, 2, 3, 4, 3, 2, 1,
checked against the authors' reference code, github.com/cszn/DnCNN and cszn/IRCNN). The
model is fully convolutional, so it takes any size and returns exactly that size.

It has no bottleneck: its "code" is the image itself, so the verbs that want a code
(encode, embed, the hybrid score) see the input, which is what such a model has.
"""

from __future__ import annotations

import torch
from torch import nn

from convae.core.errors import ModelError
from convae.models.autoencoder import AutoEncoder
from convae.models.blocks import UNet
from convae.models.registry import register

Shape = tuple[int, int, int]
#: Presets whose output is not squashed into [0, 1] (so BCE, which needs it, cannot train them).
UNBOUNDED_OUTPUT = frozenset({"dncnn", "unet", "draem-recon", "draem", "draem-large"})


def estimate_noise_sigma(x: torch.Tensor) -> torch.Tensor:
    """σ of white Gaussian noise in each image (N×1×1×1), from the image alone.

    Donoho and Johnstone's robust estimator ("Ideal spatial adaptation by wavelet shrinkage",
    Biometrika 1994): the median absolute finest diagonal Haar coefficient over 0.6745. Image
    structure barely reaches those coefficients, noise fills them; it is what
    ``skimage.restoration.estimate_sigma`` computes with a Daubechies wavelet (the tests check it
    against the σ of noise they add).
    """
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    diagonal = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    return diagonal.abs().flatten(1).median(dim=1).values.div(0.6745).view(-1, 1, 1, 1)


class ResidualDenoiser(nn.Module):
    """``x − body(x)``, no output activation; a gray input for colour output is its luma replicated.

    With ``noise_map`` the body also sees a constant channel holding the image's estimated noise
    σ, FFDNet's noise-level map (Zhang et al., "FFDNet: Toward a Fast and Flexible Solution for
    CNN-Based Image Denoising", TIP 2018, github.com/cszn/FFDNet), here estimated rather than
    typed in, so every verb still hands the model an image and nothing else.
    """

    def __init__(self, body: nn.Module, in_channels: int, out_channels: int, noise_map: bool = False) -> None:
        super().__init__()
        self.body, self.in_channels, self.out_channels = body, in_channels, out_channels
        self.noise_map = noise_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = x if self.in_channels == self.out_channels else x.mean(1, keepdim=True).expand(
            -1, self.out_channels, -1, -1)
        if self.noise_map:
            x = torch.cat([x, estimate_noise_sigma(x).expand(-1, 1, x.shape[-2], x.shape[-1])], 1)
        return base - self.body(x)


@register(
    "dncnn",
    params={"width": 32, "dilations": (1, 2, 3, 4, 3, 2, 1), "batch_norm": False, "noise_map": False},
    training={"loss": "mse", "batch_size": 64, "epochs": 30, "lr": 1e-3},
    summary="residual denoiser (DnCNN/IRCNN): 3×3 convs with the given dilations predict the noise, output = "
            "input − noise, no Sigmoid; any size in, the same size out; noise_map=true adds FFDNet's noise-level map",
)
def build_dncnn(input_shape: Shape, out_channels: int, *, width: int, dilations: tuple[int, ...],
                batch_norm: bool = False, noise_map: bool = False) -> AutoEncoder:
    """One convolution per entry of ``dilations`` (padding = dilation keeps the size), ReLU between,
    BatchNorm in the middle layers with ``batch_norm`` (DnCNN's choice; IRCNN drops it)."""
    in_channels = input_shape[0] + int(noise_map)
    if width < 1 or len(dilations) < 2 or any(d < 1 for d in dilations):
        raise ModelError(f"dncnn needs width >= 1 and at least two dilations >= 1, got width={width}, "
                         f"dilations={','.join(map(str, dilations))}")
    layers: list[nn.Module] = []
    for i, dilation in enumerate(dilations):
        first, last = i == 0, i == len(dilations) - 1
        c_in, c_out = (in_channels if first else width), (out_channels if last else width)
        layers.append(nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=first or last
                                or not batch_norm))
        if not last:
            layers += [nn.BatchNorm2d(c_out)] if batch_norm and not first else []
            layers.append(nn.ReLU(inplace=True))
    return _residual(nn.Sequential(*layers), input_shape[0], out_channels, noise_map)


def _residual(body: nn.Module, in_channels: int, out_channels: int, noise_map: bool) -> AutoEncoder:
    """The restoration presets' shape: no code (the encoder passes the image on), the decoder denoises."""
    return AutoEncoder(nn.Sequential(nn.Identity()), nn.Sequential(ResidualDenoiser(body, in_channels, out_channels,
                                                                                      noise_map)))


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True))


def unet_body(in_channels: int, out_channels: int, width: int, levels: int) -> UNet:
    """A small U-Net that predicts the noise: ``levels`` halvings by stride-2 convolution, transposed
    convolutions back up, as DRUNet's layout without its residual blocks (Zhang et al., "Plug-and-Play
    Image Restoration with Deep Denoiser Prior", TPAMI 2021, github.com/cszn/DPIR)."""
    widths = [width * 2 ** i for i in range(levels + 1)]
    head = _block(in_channels, widths[0])  # built in this order, so a seed initialises them as it always has
    downs = [nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 2, stride=2), nn.ReLU(inplace=True),
                           _block(widths[i + 1], widths[i + 1])) for i in range(levels)]
    ups = [nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(levels)]
    merges = [_block(2 * widths[i], widths[i]) for i in range(levels)]
    return UNet(head, downs, ups, merges, nn.Conv2d(widths[0], out_channels, 3, padding=1), 2 ** levels)


@register(
    "unet",
    params={"width": 24, "levels": 2, "noise_map": False},
    # the photo recipe (docs/restore.md): chosen on the validation photo, cosine so a run ends annealed
    training={"loss": "mse", "batch_size": 16, "epochs": 30, "lr": 1e-3, "lr_schedule": "cosine"},
    summary="residual U-Net denoiser: a small U-Net with skip connections predicts the noise, output = input − "
            "noise, no Sigmoid; any size in, the same size out; noise_map=true adds FFDNet's noise-level map",
)
def build_unet(input_shape: Shape, out_channels: int, *, width: int, levels: int,
               noise_map: bool = False) -> AutoEncoder:
    if width < 1 or not 1 <= levels <= 5:
        raise ModelError(f"unet needs width >= 1 and 1 to 5 levels, got width={width}, levels={levels}")
    body = unet_body(input_shape[0] + int(noise_map), out_channels, width, levels)
    return _residual(body, input_shape[0], out_channels, noise_map)
