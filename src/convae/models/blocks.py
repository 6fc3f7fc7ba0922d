"""Building blocks whose decoder halves are derived from their encoder halves.

A decoder that is written by hand only fits the input size its author had in mind.
Deriving each upsampling layer from the exact size its encoder twin consumed makes
every preset reconstruct exactly the input's shape, for odd and non-square sizes too,
without cropping or output_padding checkerboards where kernel = stride can do.
"""

from __future__ import annotations

import torch
from torch import nn

from convae.core.errors import ModelError
from convae.models.autoencoder import SwitchedCode, pad_to_multiple
from convae.shapes import DeconvSetting, solve_conv_transpose

Size2 = tuple[int, int]


def derived_conv_transpose(
    in_channels: int, out_channels: int, size_in: Size2, size_out: Size2, stride: int, bias: bool = True
) -> nn.ConvTranspose2d:
    """A ConvTranspose2d that maps ``size_in`` to ``size_out`` exactly, per dimension."""
    per_dim: list[DeconvSetting] = []
    for dim_in, dim_out in zip(size_in, size_out):
        try:
            per_dim.append(solve_conv_transpose(dim_in, dim_out, stride=stride, max_kernel=2 * stride + 1)[0])
        except Exception as error:
            raise ModelError(f"cannot upsample {size_in} to {size_out} with stride {stride}: {error}") from None
    return nn.ConvTranspose2d(
        in_channels,
        out_channels,
        kernel_size=tuple(s.kernel for s in per_dim),
        stride=stride,
        padding=tuple(s.padding for s in per_dim),
        output_padding=tuple(s.output_padding for s in per_dim),
        bias=bias,
    )


class PoolWithSwitches(nn.Module):
    """MaxPool2d that hands its argmax positions to the matching unpool layer."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(kernel, return_indices=True)

    def forward(self, x: torch.Tensor | SwitchedCode) -> SwitchedCode:
        values, switches = (x.values, x.switches) if isinstance(x, SwitchedCode) else (x, ())
        pooled, indices = self.pool(values)
        return SwitchedCode(pooled, ((indices, values.shape[-2:]),) + switches)


class ApplyToValues(nn.Module):
    """Run a plain layer on the values of a SwitchedCode, keeping the switches."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: SwitchedCode) -> SwitchedCode:
        return SwitchedCode(self.layer(x.values), x.switches)


class UnpoolWithSwitches(nn.Module):
    """MaxUnpool2d at the exact pre-pool size, using the innermost stored switches."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.unpool = nn.MaxUnpool2d(kernel)

    def forward(self, x: SwitchedCode) -> torch.Tensor | SwitchedCode:
        (indices, size), *outer = x.switches
        if torch.onnx.is_in_onnx_export():
            values = scatter_unpool(x.values, indices, size)
        else:
            values = self.unpool(x.values, indices, output_size=size)
        return SwitchedCode(values, tuple(outer)) if outer else values


def scatter_unpool(values: torch.Tensor, indices: torch.Tensor, size: Size2 | torch.Size) -> torch.Tensor:
    """MaxUnpool2d as a scatter into a zero plane: what an ONNX graph can hold.

    torch's ONNX exporter cannot trace ``max_unpool2d`` (a data-dependent check), but the
    switches of a non-overlapping max-pool are distinct positions per plane, so scattering
    the values to them gives the same tensor. tests/test_export.py checks it bit for bit.
    """
    n, c = values.shape[0], int(values.shape[1])
    h, w = (int(v) for v in size)
    plane = values.new_zeros((n, c, h * w))
    return plane.scatter(2, indices.flatten(2), values.flatten(2)).reshape(n, c, h, w)


class Reshape(nn.Module):
    """Unflatten a vector back into a C×H×W map (nn.Unflatten, with a clear repr)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class CropTo(nn.Module):
    """The top-left ``height × width`` of a padded prediction: a layer of its own, so the shape
    table shows where a model that pads inside returns to the input's size."""

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return x[..., :height, :width]


class UNet(nn.Module):
    """The U-Net's pass (Ronneberger et al., MICCAI 2015), whatever its blocks are: ``head``, then
    each of ``downs`` halving and keeping its output as a skip, then back up through ``ups``, each
    merged with its skip by concatenation; ``tail`` makes the prediction. Any size: the input is
    padded by replication to ``multiple`` and the prediction cropped back to the input's size."""

    def __init__(self, head: nn.Module, downs: list[nn.Module], ups: list[nn.Module], merges: list[nn.Module],
                 tail: nn.Module, multiple: int) -> None:
        super().__init__()
        self.head, self.downs, self.ups, self.merges = head, nn.ModuleList(downs), nn.ModuleList(ups), nn.ModuleList(merges)
        self.tail, self.crop, self.multiple = tail, CropTo(), multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(x, self.multiple)
        skips = [self.head(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for i in reversed(range(len(self.ups))):
            y = self.merges[i](torch.cat([self.ups[i](y), skips.pop()], dim=1))
        return self.crop(self.tail(y), height, width)
