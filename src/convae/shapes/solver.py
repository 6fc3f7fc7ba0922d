"""The ConvTranspose2d solver: the output-size formula run backwards.

Every (kernel, stride, padding, output_padding) that maps one size to another, best first:
kernel = stride without padding (the clean inverse of a stride-s downsampling), then even
kernels, and settings that need output_padding last, since they paint the output unevenly
(checkerboard artifacts). The models derive their decoders from it; `convae solve-deconv`
prints its answer (convae.tables.solver_report).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from convae.core.errors import ConvaeError
from convae.shapes.arithmetic import as_pair, check_positive, conv_transpose2d_out

if TYPE_CHECKING:  # pragma: no cover - typing only; the solver needs no torch
    from torch import nn

__all__ = ["DeconvSetting", "DeconvSetting2d", "solve_conv_transpose", "solve_conv_transpose_2d"]


def _tap_counts(kernel: int, stride: int, dilation: int) -> list[int]:
    """How many kernel taps land on each output phase (output index mod stride).

    A transposed convolution paints each input pixel's kernel onto the output every
    ``stride`` pixels. Phases that get no tap are holes; phases that get different
    numbers of taps are the uneven overlap that shows up as a checkerboard.
    """
    counts = [0] * stride
    for tap in range(kernel):
        counts[(tap * dilation) % stride] += 1
    return counts


@dataclass(frozen=True)
class DeconvSetting:
    """One ConvTranspose2d configuration that maps an input size to an output size."""

    kernel: int
    stride: int
    padding: int
    output_padding: int = 0
    dilation: int = 1

    @property
    def checkerboard_prone(self) -> bool:
        """Output padding, or overlap that the stride does not divide evenly, paints a checkerboard."""
        counts = _tap_counts(self.kernel, self.stride, self.dilation)
        return self.output_padding > 0 or len(set(counts)) > 1

    @property
    def clean_inverse(self) -> bool:
        """kernel = stride, no padding: every output pixel gets exactly one input."""
        return (
            self.kernel == self.stride
            and self.padding == 0
            and self.output_padding == 0
            and self.dilation == 1
        )

    @property
    def note(self) -> str:
        """Why this setting sits where it does in the ranking, in a few words."""
        if self.clean_inverse:
            return "clean inverse: kernel = stride, no overlap"
        if self.output_padding:
            return "checkerboard-prone: needs output_padding"
        if self.checkerboard_prone:
            return "checkerboard-prone: uneven overlap (kernel not a multiple of stride)"
        if self.kernel % 2 == 0:
            return "even kernel, even overlap"
        return "odd kernel, even overlap"

    def output_size(self, size_in: int) -> int:
        """The size this setting produces from ``size_in`` (the forward formula)."""
        return conv_transpose2d_out(
            size_in, self.kernel, self.stride, self.padding, self.output_padding, self.dilation
        )

    def rank(self) -> tuple:
        """Sort key: clean inverses, then even kernels, output_padding last."""
        return (
            self.output_padding > 0,
            not self.clean_inverse,
            self.kernel % 2,
            self.checkerboard_prone,
            self.kernel,
            self.padding,
            -self.stride,
            self.dilation,
        )

    def to_torch(self, in_channels: int | str = "in_ch", out_channels: int | str = "out_ch") -> str:
        """A ready-to-paste ``nn.ConvTranspose2d(...)`` line."""
        return DeconvSetting2d(self, self).to_torch(in_channels, out_channels)

    def build(self, in_channels: int, out_channels: int, bias: bool = True) -> "nn.ConvTranspose2d":
        """The layer itself, so callers (and tests) can check the real output size."""
        return DeconvSetting2d(self, self).build(in_channels, out_channels, bias)


@dataclass(frozen=True)
class DeconvSetting2d:
    """A ConvTranspose2d for non-square sizes: one setting for height, one for width."""

    height: DeconvSetting
    width: DeconvSetting

    def _arguments(self) -> dict[str, Any]:
        def value(attribute: str) -> int | tuple[int, int]:
            h, w = getattr(self.height, attribute), getattr(self.width, attribute)
            return h if h == w else (h, w)

        return {
            "kernel_size": value("kernel"),
            "stride": value("stride"),
            "padding": value("padding"),
            "output_padding": value("output_padding"),
            "dilation": value("dilation"),
        }

    @property
    def checkerboard_prone(self) -> bool:
        return self.height.checkerboard_prone or self.width.checkerboard_prone

    def to_torch(self, in_channels: int | str = "in_ch", out_channels: int | str = "out_ch") -> str:
        """A ready-to-paste ``nn.ConvTranspose2d(...)`` line; default-valued arguments are left out."""
        defaults = {"padding": 0, "output_padding": 0, "dilation": 1}
        parts = [str(in_channels), str(out_channels)]
        for key, value in self._arguments().items():
            if defaults.get(key) != value:
                parts.append(f"{key}={value}")
        return f"nn.ConvTranspose2d({', '.join(parts)})"

    def build(self, in_channels: int, out_channels: int, bias: bool = True) -> "nn.ConvTranspose2d":
        from torch import nn

        return nn.ConvTranspose2d(in_channels, out_channels, bias=bias, **self._arguments())


def _covers_every_phase(kernel: int, stride: int, dilation: int) -> bool:
    return min(_tap_counts(kernel, stride, dilation)) > 0


def solve_conv_transpose(
    size_in: int,
    size_out: int,
    *,
    kernel: int | None = None,
    stride: int | None = None,
    max_kernel: int = 7,
    dilation: int = 1,
) -> list[DeconvSetting]:
    """Every ConvTranspose2d setting mapping ``size_in`` to ``size_out`` exactly, best first.

    Searched: kernels 1..``max_kernel`` (or just ``kernel``), strides 1..kernel (or just
    ``stride``), every output_padding PyTorch allows and every padding up to d(k-1).
    Left out, because a decoder never wants them: kernels whose taps miss some output
    phase (kernel < stride at dilation 1, which leaves holes), and padding beyond the
    dilated kernel span (it would crop away every pixel an edge input row painted).
    Ranking: kernel = stride without padding first (the clean inverse of a stride-s
    downsampling), then even kernels, then odd ones, settings needing output_padding
    last. Raises ConvaeError saying why when no setting exists.
    """
    check_positive(size_in=size_in, size_out=size_out, max_kernel=max_kernel, dilation=dilation)
    if kernel is not None:
        check_positive(kernel=kernel)
    if stride is not None:
        check_positive(stride=stride)
    kernels = [kernel] if kernel is not None else list(range(1, max_kernel + 1))
    found: list[DeconvSetting] = []
    for k in kernels:
        strides = [stride] if stride is not None else range(1, k + 1)
        for s in strides:
            if not _covers_every_phase(k, s, dilation):
                continue
            for op in range(0, max(s, dilation)):
                # size_out = (in-1)s - 2p + d(k-1) + op + 1  =>  2p = (in-1)s + d(k-1) + op + 1 - out
                twice_p = (size_in - 1) * s + dilation * (k - 1) + op + 1 - size_out
                if twice_p < 0 or twice_p % 2:
                    continue
                p = twice_p // 2
                if p > dilation * (k - 1):
                    continue
                found.append(DeconvSetting(k, s, p, op, dilation))
    if not found:
        raise ConvaeError(_why_unsolvable(size_in, size_out, kernel, stride, max_kernel, dilation))
    return sorted(set(found), key=DeconvSetting.rank)


def solve_conv_transpose_2d(
    size_in: Sequence[int],
    size_out: Sequence[int],
    **options: Any,
) -> tuple[list[DeconvSetting], list[DeconvSetting]]:
    """Solve height and width separately (same options); the best pair is ``(h[0], w[0])``.

    nn.ConvTranspose2d takes per-dimension kernel/stride/padding, so a non-square
    mapping needs no compromise: each dimension simply gets its own best setting.
    """
    (h_in, w_in), (h_out, w_out) = as_pair(tuple(size_in), "input size"), as_pair(tuple(size_out), "output size")
    if (h_in, h_out) == (w_in, w_out):  # square: one answer serves both dimensions
        both = solve_conv_transpose(h_in, h_out, **options)
        return both, list(both)
    try:
        heights = solve_conv_transpose(h_in, h_out, **options)
    except ConvaeError as error:
        raise ConvaeError(f"height: {error}") from None
    try:
        widths = solve_conv_transpose(w_in, w_out, **options)
    except ConvaeError as error:
        raise ConvaeError(f"width: {error}") from None
    return heights, widths


def _why_unsolvable(
    size_in: int, size_out: int, kernel: int | None, stride: int | None, max_kernel: int, dilation: int
) -> str:
    if kernel is not None and stride is not None and not _covers_every_phase(kernel, stride, dilation):
        return (
            f"kernel {kernel} with stride {stride} (dilation {dilation}) leaves output pixels that no input "
            f"reaches; use a kernel of at least the stride"
        )
    if stride is not None and kernel is None and stride > max_kernel:
        return (
            f"stride {stride} needs a kernel of at least {stride}, but kernels only go up to "
            f"--max-kernel {max_kernel}; raise --max-kernel"
        )
    if size_out < size_in:
        largest = kernel if kernel is not None else max_kernel
        shrink = dilation * (largest - 1)
        return (
            f"no ConvTranspose2d maps {size_in} to {size_out}: H_OUT < H_IN, and even stride 1 with padding "
            f"kernel-1 shrinks by at most {shrink} (kernel {largest}); downsample with Conv2d or pooling instead"
        )
    limits = []
    if kernel is not None:
        limits.append(f"kernel {kernel}")
    else:
        limits.append(f"kernels up to {max_kernel}")
    if stride is not None:
        limits.append(f"stride {stride}")
    if dilation != 1:
        limits.append(f"dilation {dilation}")
    hint = "try a larger --max-kernel or another stride"
    # The smallest output a stride can give: the widest kernel, cropped by its full span.
    if stride is not None and (size_in - 1) * stride + 1 - dilation * ((kernel or max_kernel) - 1) > size_out:
        hint = f"stride {stride} already overshoots {size_out}; use a smaller stride"
    return f"no ConvTranspose2d with {', '.join(limits)} maps {size_in} to {size_out}; {hint}"
