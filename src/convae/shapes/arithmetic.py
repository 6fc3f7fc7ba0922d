"""Output-size arithmetic for the layers autoencoders are built from.

Decoders must undo their encoder's downsampling exactly, for any input size. Doing the
arithmetic here, once, lets the model presets derive each ConvTranspose2d from the size
its encoder twin consumed (instead of cropping or padding after the fact), and lets the
CLI explain the numbers to users who are learning them.

Every size function takes either one dimension (an ``int``) or a per-dimension pair
(``(H, W)``) for non-square inputs; each layer parameter may likewise be an ``int`` (same
for both dimensions) or an ``(h, w)`` pair, exactly as ``nn.Conv2d`` accepts them. An
``int`` size gives an ``int`` back, a pair gives a pair. The formulas are PyTorch's
(floor mode unless ``ceil_mode`` is given):

========================  ==========================================================
Conv2d                    floor((H + 2p - d(k-1) - 1) / s) + 1
MaxPool2d / AvgPool2d     the same, stride defaulting to the kernel
ConvTranspose2d           (H-1)s - 2p + d(k-1) + output_padding + 1
MaxUnpool2d               (H-1)s - 2p + k
Upsample                  floor(H * scale_factor)
========================  ==========================================================

The ConvTranspose2d solver, which runs the last formula backwards, is solver.py.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, TypeVar, Union

from convae.core.errors import ConvaeError

if TYPE_CHECKING:  # pragma: no cover - typing only; the arithmetic needs no torch
    from torch import nn

__all__ = ["conv2d_out", "pool2d_out", "conv_transpose2d_out", "max_unpool2d_out", "upsample_out", "layer_out"]

Size = Union[int, tuple[int, int]]
_F = TypeVar("_F", bound=Callable[..., int])


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ConvaeError(f"{name} must be at least 1, got {value}")


def _per_dimension(function: _F) -> _F:
    """Let a one-dimension size function take (H, W) pairs and per-dimension parameters.

    Written once here so each formula stays a readable one-liner on plain ints, while
    callers with non-square inputs (or ``kernel_size=(3, 5)``) get both answers at once.
    """

    @functools.wraps(function)
    def wrapper(size: Any, *args: Any, **kwargs: Any) -> Any:
        pair_args = [a for a in (*args, *kwargs.values()) if isinstance(a, (tuple, list))]
        if not isinstance(size, (tuple, list)) and not pair_args:
            return function(size, *args, **kwargs)
        sizes = as_pair(size, "size")

        def pick(value: Any, dim: int) -> Any:
            return as_pair(value, "parameter")[dim] if isinstance(value, (tuple, list)) else value

        return tuple(
            function(sizes[dim], *(pick(a, dim) for a in args), **{k: pick(v, dim) for k, v in kwargs.items()})
            for dim in range(2)
        )

    return wrapper  # type: ignore[return-value]


def as_pair(value: Any, what: str) -> tuple[Any, Any]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConvaeError(f"{what} {tuple(value)} must be one value or an (height, width) pair")
        return (value[0], value[1])
    return (value, value)


@_per_dimension
def conv2d_out(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Conv2d: floor((H + 2p - d(k-1) - 1) / s) + 1."""
    check_positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        raise ConvaeError(
            f"input size {size} is too small for kernel {kernel} (dilation {dilation}, padding {padding})"
        )
    return out


@_per_dimension
def pool2d_out(
    size: int,
    kernel: int,
    stride: int | None = None,
    padding: int = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """MaxPool2d/AvgPool2d; stride defaults to the kernel, as in PyTorch."""
    stride = kernel if stride is None else stride
    check_positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
    if padding * 2 > kernel:
        raise ConvaeError(f"pooling padding {padding} must be at most half the kernel {kernel}")
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    # PyTorch's pooling_output_shape: floor division, rounded up in ceil mode ...
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    # ... where a last window that would start inside the right padding is dropped.
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    if out < 1:
        raise ConvaeError(f"input size {size} is smaller than the pooling window {kernel}")
    return out


@_per_dimension
def conv_transpose2d_out(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> int:
    """ConvTranspose2d: (H-1)s - 2p + d(k-1) + output_padding + 1."""
    check_positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
    if output_padding >= max(stride, dilation):
        raise ConvaeError(
            f"output_padding {output_padding} must be smaller than stride {stride} or dilation {dilation}"
        )
    out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    if out < 1:
        raise ConvaeError(f"ConvTranspose2d settings give a non-positive output size {out}")
    return out


@_per_dimension
def max_unpool2d_out(size: int, kernel: int, stride: int | None = None, padding: int = 0) -> int:
    """MaxUnpool2d without ``output_size``: (H-1)s - 2p + k.

    Pass ``output_size`` to the layer itself when pooling dropped a remainder row (odd
    sizes): this formula cannot know it, which is why the unpool presets store the size.
    """
    stride = kernel if stride is None else stride
    check_positive(size=size, kernel=kernel, stride=stride)
    out = (size - 1) * stride - 2 * padding + kernel
    if out < 1:
        raise ConvaeError(f"MaxUnpool2d settings give a non-positive output size {out}")
    return out


@_per_dimension
def upsample_out(size: int, scale_factor: float) -> int:
    """nn.Upsample(scale_factor=...): floor(H * scale)."""
    check_positive(size=size)
    if scale_factor <= 0:
        raise ConvaeError(f"scale_factor must be positive, got {scale_factor}")
    out = int(size * scale_factor)
    if out < 1:
        raise ConvaeError(f"upsampling {size} by {scale_factor} gives an empty output")
    return out


def layer_out(layer: "nn.Module", size: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) a spatial layer produces from ``size``, read from the layer's own settings.

    Covers Conv2d, ConvTranspose2d (without an explicit ``output_size``), MaxPool2d,
    AvgPool2d, MaxUnpool2d and Upsample (scale_factor or size); other layers keep the
    size. This is the arithmetic behind a shape trace, without running the layer.
    """
    from torch import nn

    if isinstance(layer, nn.ConvTranspose2d):
        return conv_transpose2d_out(
            size, layer.kernel_size, layer.stride, layer.padding, layer.output_padding, layer.dilation
        )
    if isinstance(layer, nn.Conv2d):
        if isinstance(layer.padding, str):  # "same" keeps the size, "valid" is no padding
            return tuple(size) if layer.padding == "same" else conv2d_out(
                tuple(size), layer.kernel_size, layer.stride, 0, layer.dilation
            )
        return conv2d_out(tuple(size), layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    if isinstance(layer, nn.MaxPool2d):
        return pool2d_out(tuple(size), layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode)
    if isinstance(layer, nn.AvgPool2d):
        return pool2d_out(tuple(size), layer.kernel_size, layer.stride, layer.padding, 1, layer.ceil_mode)
    if isinstance(layer, nn.MaxUnpool2d):
        return max_unpool2d_out(tuple(size), layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, nn.Upsample):
        if layer.size is not None:
            return as_pair(layer.size, "Upsample size")
        return upsample_out(tuple(size), layer.scale_factor)
    return tuple(size)  # type: ignore[return-value]
