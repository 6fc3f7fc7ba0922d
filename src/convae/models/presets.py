"""The reference autoencoders and convae's stronger default, as named presets.

Each builder takes the input shape (C, H, W) and the output channel count, so every
preset works for any size and channel count, and for tasks whose output differs from
the input (colorization: 1 channel in, 3 out). Parameter defaults reproduce the
reference examples; the ``training`` defaults are what the references trained with.
"""

from __future__ import annotations

from torch import nn

from convae.core.errors import ModelError
from convae.models.autoencoder import AutoEncoder
from convae.models.blocks import (
    ApplyToValues,
    PoolWithSwitches,
    Reshape,
    UnpoolWithSwitches,
    derived_conv_transpose,
)
from convae.models.registry import register
from convae.shapes import conv2d_out, pool2d_out

Shape = tuple[int, int, int]


def _output_activation(name: str) -> nn.Module:
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "none":
        return nn.Identity()
    raise ModelError(f"out_activation must be 'sigmoid' or 'none', got {name!r}")


def _shrink(size: tuple[int, int], step, what: str) -> tuple[int, int]:
    """Apply one downsampling step per dimension, with a clear error when it cannot."""
    try:
        return (step(size[0]), step(size[1]))
    except Exception as error:
        raise ModelError(f"input {size[0]}x{size[1]} is too small for {what}: {error}") from None


# Reference: 784→200→784, BCE, Adam, batch 124, 10 epochs: train loss 0.066
@register(
    "fc",
    params={"hidden": 200},
    training={"loss": "bce", "batch_size": 124, "epochs": 10, "lr": 1e-3},
    summary="fully connected C·H·W → hidden → C·H·W, ReLU, Sigmoid (the MNIST 784-200-784 baseline)",
)
def build_fc(input_shape: Shape, out_channels: int, *, hidden: int) -> AutoEncoder:
    channels, height, width = input_shape
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, hidden), nn.ReLU())
    decoder = nn.Sequential(
        nn.Linear(hidden, out_channels * height * width), nn.Sigmoid(), Reshape((out_channels, height, width))
    )
    return AutoEncoder(encoder, decoder)


# Reference: 3→16→8 channels, 32×32×3 → 8×8×8 code
@register(
    "conv-pool",
    params={"channels": (16, 8)},
    training={"loss": "mse", "batch_size": 50, "epochs": 10, "lr": 1e-3},
    summary="Conv3×3+ReLU+MaxPool2 per level; ConvTranspose(k2,s2) back up, Sigmoid (the CIFAR-10 example)",
)
def build_conv_pool(input_shape: Shape, out_channels: int, *, channels: tuple[int, ...]) -> AutoEncoder:
    in_channels, height, width = input_shape
    widths = (in_channels, *channels)
    sizes = [(height, width)]
    encoder: list[nn.Module] = []
    for level, (c_in, c_out) in enumerate(zip(widths, widths[1:])):
        encoder += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        sizes.append(_shrink(sizes[-1], lambda s: pool2d_out(s, 2), f"max-pool level {level + 1}"))
    decoder: list[nn.Module] = []
    out_widths = (out_channels, *channels)
    for level in reversed(range(len(channels))):
        decoder.append(
            derived_conv_transpose(out_widths[level + 1], out_widths[level], sizes[level + 1], sizes[level], 2)
        )
        decoder.append(nn.ReLU() if level else nn.Sigmoid())
    return AutoEncoder(nn.Sequential(*encoder), nn.Sequential(*decoder))


# Reference: CNTK deconvolution example: test RMSE 0.223 (1 map, pool 4), 0.196 (3 maps), 0.131 (pool 2)
@register(
    "unpool",
    params={"maps": 1, "pool": 4, "out_activation": "none"},
    training={"loss": "mse", "batch_size": 64, "epochs": 5, "lr": 2e-3},
    summary="Conv5×5 (maps)+ReLU, MaxPool(pool) with switches; MaxUnpool + ConvTranspose5×5, no bias",
)
def build_unpool(
    input_shape: Shape, out_channels: int, *, maps: int, pool: int, out_activation: str
) -> AutoEncoder:
    return _unpool_stack(input_shape, out_channels, (maps,), pool, out_activation)


# Reference: CNTK deconvolution example, two-level variant
@register(
    "unpool-2level",
    params={"maps": (5, 1), "pool": 2, "out_activation": "none"},
    training={"loss": "mse", "batch_size": 64, "epochs": 5, "lr": 2e-3},
    summary="two conv+pool levels (5 maps then 1, pool 2 twice) undone by two unpool+deconv levels",
)
def build_unpool_2level(
    input_shape: Shape, out_channels: int, *, maps: tuple[int, ...], pool: int, out_activation: str
) -> AutoEncoder:
    return _unpool_stack(input_shape, out_channels, maps, pool, out_activation)


def _unpool_stack(
    input_shape: Shape, out_channels: int, maps: tuple[int, ...], pool: int, out_activation: str
) -> AutoEncoder:
    in_channels, height, width = input_shape
    size = (height, width)
    widths = (in_channels, *maps)
    encoder: list[nn.Module] = []
    for level, (c_in, c_out) in enumerate(zip(widths, widths[1:])):
        conv = nn.Sequential(nn.Conv2d(c_in, c_out, 5, padding=2), nn.ReLU())
        encoder += [conv if level == 0 else ApplyToValues(conv), PoolWithSwitches(pool)]
        size = _shrink(size, lambda s: pool2d_out(s, pool), f"max-pool {pool} at level {level + 1}")
    out_widths = (out_channels, *maps)
    decoder: list[nn.Module] = []
    for level in reversed(range(len(maps))):
        decoder.append(UnpoolWithSwitches(pool))
        deconv = nn.ConvTranspose2d(out_widths[level + 1], out_widths[level], 5, padding=2, bias=False)
        if level:
            decoder.append(ApplyToValues(nn.Sequential(deconv, nn.ReLU())))
        else:
            decoder += [deconv, _output_activation(out_activation)]
    return AutoEncoder(nn.Sequential(*encoder), nn.Sequential(*decoder))


@register(
    "strided",
    params={"channels": (16, 8)},
    training={"loss": "mse", "batch_size": 128, "epochs": 10, "lr": 1e-3},
    summary="Conv3×3 stride 2 pad 1 + ReLU per level; ConvTranspose(k2,s2) back up, Sigmoid",
)
def build_strided(input_shape: Shape, out_channels: int, *, channels: tuple[int, ...]) -> AutoEncoder:
    in_channels, height, width = input_shape
    widths = (in_channels, *channels)
    sizes = [(height, width)]
    encoder: list[nn.Module] = []
    for level, (c_in, c_out) in enumerate(zip(widths, widths[1:])):
        encoder += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
        sizes.append(_shrink(sizes[-1], lambda s: conv2d_out(s, 3, 2, 1), f"strided conv level {level + 1}"))
    out_widths = (out_channels, *channels)
    decoder: list[nn.Module] = []
    for level in reversed(range(len(channels))):
        decoder.append(
            derived_conv_transpose(out_widths[level + 1], out_widths[level], sizes[level + 1], sizes[level], 2)
        )
        decoder.append(nn.ReLU() if level else nn.Sigmoid())
    return AutoEncoder(nn.Sequential(*encoder), nn.Sequential(*decoder))


#: ``levels`` 0 downsamples (stride 2) until the feature map's larger side is at most this.
AUTO_SIDE = 8
#: The fewest channels a high-resolution level of an automatically deep ``conv`` keeps.
MIN_WIDTH = 8


def auto_levels(height: int, width: int) -> int:
    """Stride-2 levels that bring an input to at most ``AUTO_SIDE`` px, and at least the 2 every
    smaller input always had (so their models are what they were): 16 → 2, 28 → 2, 64 → 3, 256 → 5."""
    levels = 0
    while max(height, width) > AUTO_SIDE:
        height, width = conv2d_out(height, 3, 2, 1), conv2d_out(width, 3, 2, 1)
        levels += 1
    return max(levels, 2)


ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "leaky": lambda: nn.LeakyReLU(0.1)}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ModelError(f"act must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def _conv_block(c_in: int, c_out: int, stride: int = 1, act: str = "relu") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), _activation(act)
    )


class Residual(nn.Module):
    """``x + body(x)``: extra blocks that start as (almost) the identity, so depth trains easily."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


def _extra_blocks(channels: int, count: int, residual: bool, act: str) -> list[nn.Module]:
    return [Residual(_conv_block(channels, channels, act=act)) if residual else _conv_block(channels, channels, act=act)
            for _ in range(count)]


@register(
    "conv",
    params={"latent_dim": 32, "width": 32, "levels": 0, "blocks": 1, "residual": False, "hidden": 0, "act": "relu",
            "code_channels": 8, "spatial_from": 64},
    training={"loss": "mse", "batch_size": 128, "epochs": 10, "lr": 2e-3},
    summary="convae's default: BatchNorm conv blocks, strided downsampling to ~8 px (levels 0 = by input size), "
            "dense bottleneck of latent_dim; above spatial_from px a spatial code of code_channels",
)
def build_conv(
    input_shape: Shape,
    out_channels: int,
    *,
    latent_dim: int,
    width: int,
    levels: int,
    blocks: int = 1,
    residual: bool = False,
    hidden: int = 0,
    act: str = "relu",
    code_channels: int = 8,
    spatial_from: int = 64,
) -> AutoEncoder:
    """``blocks`` conv blocks follow each down/upsampling (``residual`` wraps them as x + f(x));
    ``hidden`` > 0 puts a dense layer of that size on each side of the code. The defaults
    (1 plain block, no hidden layer, ReLU) are the original architecture, weight for weight,
    at 28×28 and 32×32.

    Why it scales: with a fixed depth, a 256×256 input kept a 64×128×128 map and fed a
    262,144 → 32 dense layer (17 M parameters, 2.75 G multiply-adds an image). ``levels`` 0
    downsamples until the map is at most ``AUTO_SIDE`` px; the two deepest levels keep the
    small-image widths and each level above them halves its channels (at least
    ``MIN_WIDTH``), so the work per level stays about the same. Above ``spatial_from`` px the
    code is a ``code_channels``-channel map (fully convolutional) instead of a dense vector;
    below, the dense bottleneck stays, where it reconstructs better.
    """
    in_channels, height, width_px = input_shape
    auto = levels == 0
    if levels < 0:
        raise ModelError(f"conv needs levels >= 1 (or 0: from the input size), got levels={levels}")
    if blocks < 0 or hidden < 0 or latent_dim < 1 or width < 1 or code_channels < 1:
        raise ModelError(f"conv needs latent_dim, width, code_channels >= 1 and blocks, hidden >= 0 (got {latent_dim}, "
                         f"{width}, {code_channels}, {blocks}, {hidden})")
    levels = auto_levels(height, width_px) if auto else levels
    shift = max(levels - 2, 0) if auto else 0
    widths = [max(MIN_WIDTH if shift else 1, int(width * 2.0 ** min(level - shift, 1))) for level in range(levels + 1)]
    sizes = [(height, width_px)]
    encoder: list[nn.Module] = [_conv_block(in_channels, widths[0], act=act)]
    for level in range(levels):
        encoder += [_conv_block(widths[level], widths[level + 1], stride=2, act=act),
                    *_extra_blocks(widths[level + 1], blocks, residual, act)]
        sizes.append(_shrink(sizes[-1], lambda s: conv2d_out(s, 3, 2, 1), f"strided conv level {level + 1}"))
    code_map = (widths[-1], *sizes[-1])
    flat = code_map[0] * code_map[1] * code_map[2]
    if max(height, width_px) > spatial_from:
        encoder.append(nn.Conv2d(widths[-1], code_channels, 1))
        decoder: list[nn.Module] = [nn.Conv2d(code_channels, widths[-1], 1), _activation(act)]
    elif hidden:
        encoder += [nn.Flatten(), nn.Linear(flat, hidden), _activation(act), nn.Linear(hidden, latent_dim)]
        decoder = [nn.Linear(latent_dim, hidden), _activation(act), nn.Linear(hidden, flat),
                   _activation(act), Reshape(code_map)]
    else:
        encoder += [nn.Flatten(), nn.Linear(flat, latent_dim)]
        decoder = [nn.Linear(latent_dim, flat), _activation(act), Reshape(code_map)]
    for level in reversed(range(levels)):
        decoder += [
            derived_conv_transpose(widths[level + 1], widths[level], sizes[level + 1], sizes[level], 2, bias=False),
            nn.BatchNorm2d(widths[level]),
            _activation(act),
            *_extra_blocks(widths[level], blocks, residual, act),
        ]
    decoder += [nn.Conv2d(widths[0], out_channels, 3, padding=1), nn.Sigmoid()]
    return AutoEncoder(nn.Sequential(*encoder), nn.Sequential(*decoder))
