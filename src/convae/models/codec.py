"""Learned image codecs: Ballé's factorized-prior and scale-hyperprior autoencoders.

``codec`` is bmshj2018-factorized and ``codec-hyper`` bmshj2018-hyperprior (Ballé, Minnen,
Singh, Hwang & Johnston, "Variational image compression with a scale hyperprior", ICLR 2018;
layouts checked against CompressAI's compressai/models/google.py): four 5×5 stride-2
convolutions with GDN between them down to the latent ``y``, the mirror image with IGDN back
up, and no output Sigmoid. The hyperprior adds a second, smaller autoencoder on ``|y|``
whose quantised latent ``z`` (coded with the factorized density) predicts the scale of each
element of ``y``.

The model is fully convolutional: an image is padded at its bottom and right edges (by
replication) to a multiple of 16, coded, and cropped back; the hyperprior's prediction is
cropped to the latent's size, so no image needs a multiple of 64. ``forward(x)`` is what
every other verb sees (the image as the decoder would return it, rounded latents in eval
mode); ``forward(x, likelihoods=True)`` also gives the latents' likelihoods for the
rate–distortion loss.
"""

from __future__ import annotations

import torch
from torch import nn

from convae.core.errors import ModelError
from convae.models.autoencoder import PaddedAutoEncoder
from convae.models.entropy import (
    FactorizedDensity,
    gaussian_likelihood,
    noisy,
    rounded_straight_through,
)
from convae.models.gdn import GDN
from convae.models.registry import register

Shape = tuple[int, int, int]
#: The codecs' downsampling: four stride-2 layers.
MULTIPLE = 16
QUANTIZERS = ("ste", "noise")
#: Presets that are codecs (trained with --loss rd:LAMBDA, encoded with the entropy coder).
CODEC_PRESETS = frozenset({"codec", "codec-hyper"})


def _down(c_in: int, c_out: int, kernel: int = 5) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride=2, padding=kernel // 2)


def _up(c_in: int, c_out: int, kernel: int = 5) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=kernel // 2, output_padding=1)


def latent_size(height: int, width: int) -> tuple[int, int]:
    """The latent's H×W for an image of H×W (after padding to a multiple of 16)."""
    return -(-height // MULTIPLE), -(-width // MULTIPLE)


def hyper_latent_size(rows: int, cols: int) -> tuple[int, int]:
    """The hyperprior's z for a latent of rows×cols: its two stride-2 layers halve, rounding up."""
    return -(-rows // 4), -(-cols // 4)


class Codec(PaddedAutoEncoder):
    """``x → y = g_a(x) → round → g_s``, with an entropy model that says what ``round(y)`` costs.

    ``encoder``/``decoder`` are the analysis and synthesis transforms (so ``encode`` gives the
    float latent and ``decode`` an image from a latent). ``density`` models ``y`` (factorized)
    or ``z`` (hyperprior, with ``hyper_analysis``/``hyper_synthesis``).
    """

    #: A codec compresses its input; wrapping it in a colour head would drop its entropy model.
    takes_color_head = False
    multiple = MULTIPLE

    def __init__(self, analysis: nn.Module, synthesis: nn.Module, density: FactorizedDensity,
                 hyper_analysis: nn.Module | None = None, hyper_synthesis: nn.Module | None = None,
                 quantizer: str = "ste") -> None:
        super().__init__(analysis, synthesis)
        if quantizer not in QUANTIZERS:
            raise ModelError(f"quantizer must be one of {', '.join(QUANTIZERS)}, got {quantizer!r}")
        self.density = density
        self.hyper_analysis, self.hyper_synthesis = hyper_analysis, hyper_synthesis
        self.quantizer = quantizer

    @property
    def hyper(self) -> bool:
        return self.hyper_analysis is not None

    def hyper_latent(self, y: torch.Tensor) -> torch.Tensor:
        assert self.hyper_analysis is not None
        return self.hyper_analysis(torch.abs(y))

    def scales(self, z_hat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The predicted scale of each element of ``y`` (cropped to y's H×W)."""
        assert self.hyper_synthesis is not None
        return self.hyper_synthesis(z_hat)[..., : size[0], : size[1]]

    def _quantised(self, value: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the likelihood is evaluated at, what the next transform sees)."""
        if not self.training:
            rounded = torch.round(value)
            return rounded, rounded
        tilde = noisy(value, generator)
        return tilde, (rounded_straight_through(value) if self.quantizer == "ste" else tilde)

    def forward(self, x: torch.Tensor, likelihoods: bool = False, generator: torch.Generator | None = None):
        y = self.encode(x)
        y_rate, y_hat = self._quantised(y, generator)
        if self.hyper:
            z_rate, z_hat = self._quantised(self.hyper_latent(y), generator)
            rates = [gaussian_likelihood(y_rate, self.scales(z_hat, tuple(y.shape[-2:]))), self.density.likelihood(z_rate)]
        else:
            rates = [self.density.likelihood(y_rate)]
        x_hat = self.finish(self.decoder(y_hat), x)
        return (x_hat, rates) if likelihoods else x_hat


def _check(name: str, n: int, m: int) -> None:
    if n < 1 or m < 1:
        raise ModelError(f"{name} needs width >= 1 and latent >= 1, got width={n}, latent={m}")


def _transforms(c_in: int, c_out: int, n: int, m: int) -> tuple[nn.Module, nn.Module]:
    analysis = nn.Sequential(_down(c_in, n), GDN(n), _down(n, n), GDN(n), _down(n, n), GDN(n), _down(n, m))
    synthesis = nn.Sequential(_up(m, n), GDN(n, inverse=True), _up(n, n), GDN(n, inverse=True),
                              _up(n, n), GDN(n, inverse=True), _up(n, c_out))
    return analysis, synthesis


#: Sized for two CPU cores: CompressAI's lowest qualities use width 128 and latent 192.
CODEC_PARAMS = {"width": 96, "latent": 128, "quantizer": "ste"}
CODEC_TRAINING = {"loss": "rd:0.013", "batch_size": 16, "epochs": 100, "lr": 1e-3}


@register(
    "codec",
    params=CODEC_PARAMS,
    training=CODEC_TRAINING,
    summary="learned codec after bmshj2018-factorized: GDN transforms, a factorized entropy model, entropy-coded "
            "bitstreams (train with --loss rd:LAMBDA); any size in, the same size out",
)
def build_codec(input_shape: Shape, out_channels: int, *, width: int, latent: int, quantizer: str) -> Codec:
    _check("codec", width, latent)
    analysis, synthesis = _transforms(input_shape[0], out_channels, width, latent)
    return Codec(analysis, synthesis, FactorizedDensity(latent), quantizer=quantizer)


@register(
    "codec-hyper",
    params=CODEC_PARAMS,
    training=CODEC_TRAINING,
    summary="learned codec after bmshj2018-hyperprior: codec plus a hyperprior that predicts each latent's scale "
            "(train with --loss rd:LAMBDA); any size in, the same size out",
)
def build_codec_hyper(input_shape: Shape, out_channels: int, *, width: int, latent: int, quantizer: str) -> Codec:
    _check("codec-hyper", width, latent)
    analysis, synthesis = _transforms(input_shape[0], out_channels, width, latent)
    hyper_analysis = nn.Sequential(nn.Conv2d(latent, width, 3, padding=1), nn.ReLU(inplace=True),
                                   _down(width, width), nn.ReLU(inplace=True), _down(width, width))
    hyper_synthesis = nn.Sequential(_up(width, width), nn.ReLU(inplace=True), _up(width, width),
                                    nn.ReLU(inplace=True), nn.Conv2d(width, latent, 3, padding=1), nn.ReLU())
    return Codec(analysis, synthesis, FactorizedDensity(width), hyper_analysis, hyper_synthesis, quantizer)
