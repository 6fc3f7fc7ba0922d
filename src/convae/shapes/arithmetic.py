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

:func:`solve_conv_transpose` runs the ConvTranspose2d formula backwards: every
(kernel, stride, padding, output_padding) that maps one size to another, best first.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar, Union

from convae.core.errors import ConvaeError

if TYPE_CHECKING:  # pragma: no cover - typing only; the arithmetic needs no torch
    from torch import nn

__all__ = [
    "conv2d_out",
    "pool2d_out",
    "conv_transpose2d_out",
    "max_unpool2d_out",
    "upsample_out",
    "layer_out",
    "DeconvSetting",
    "DeconvSetting2d",
    "solve_conv_transpose",
    "solve_conv_transpose_2d",
    "solve_report",
    "parse_size",
    "parse_hw",
]

Size = Union[int, tuple[int, int]]
_F = TypeVar("_F", bound=Callable[..., int])


def _check_positive(**values: int) -> None:
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
        sizes = _pair(size, "size")

        def pick(value: Any, dim: int) -> Any:
            return _pair(value, "parameter")[dim] if isinstance(value, (tuple, list)) else value

        return tuple(
            function(sizes[dim], *(pick(a, dim) for a in args), **{k: pick(v, dim) for k, v in kwargs.items()})
            for dim in range(2)
        )

    return wrapper  # type: ignore[return-value]


def _pair(value: Any, what: str) -> tuple[Any, Any]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConvaeError(f"{what} {tuple(value)} must be one value or an (height, width) pair")
        return (value[0], value[1])
    return (value, value)


@_per_dimension
def conv2d_out(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Conv2d: floor((H + 2p - d(k-1) - 1) / s) + 1."""
    _check_positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
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
    _check_positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
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
    _check_positive(size=size, kernel=kernel, stride=stride, dilation=dilation)
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
    _check_positive(size=size, kernel=kernel, stride=stride)
    out = (size - 1) * stride - 2 * padding + kernel
    if out < 1:
        raise ConvaeError(f"MaxUnpool2d settings give a non-positive output size {out}")
    return out


@_per_dimension
def upsample_out(size: int, scale_factor: float) -> int:
    """nn.Upsample(scale_factor=...): floor(H * scale)."""
    _check_positive(size=size)
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
            return _pair(layer.size, "Upsample size")
        return upsample_out(tuple(size), layer.scale_factor)
    return tuple(size)  # type: ignore[return-value]


# -- the ConvTranspose2d solver -----------------------------------------------------


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
    _check_positive(size_in=size_in, size_out=size_out, max_kernel=max_kernel, dilation=dilation)
    if kernel is not None:
        _check_positive(kernel=kernel)
    if stride is not None:
        _check_positive(stride=stride)
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
    (h_in, w_in), (h_out, w_out) = _pair(tuple(size_in), "input size"), _pair(tuple(size_out), "output size")
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


def _solution_table(settings: list[DeconvSetting], size_in: int) -> list[str]:
    header = ("#", "kernel", "stride", "padding", "output_padding", "dilation", "note")
    body = [
        (str(i), str(s.kernel), str(s.stride), str(s.padding), str(s.output_padding), str(s.dilation), s.note)
        for i, s in enumerate(settings, 1)
    ]
    widths = [max(len(row[c]) for row in (header, *body)) for c in range(len(header))]
    lines = []
    for row in (header, *body):
        cells = [row[c].rjust(widths[c]) for c in range(len(row) - 1)] + [row[-1]]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _formula(setting: DeconvSetting, size_in: int) -> str:
    s = setting
    return (
        f"({size_in}-1)·{s.stride} - 2·{s.padding} + {s.dilation}·({s.kernel}-1) + {s.output_padding} + 1 "
        f"= {s.output_size(size_in)}"
    )


def solve_report(
    size_in: Sequence[int],
    size_out: Sequence[int],
    *,
    kernel: int | None = None,
    stride: int | None = None,
    max_kernel: int = 7,
    dilation: int = 1,
    in_channels: int | str = "in_ch",
    out_channels: int | str = "out_ch",
) -> tuple[str, dict[str, Any]]:
    """What ``convae solve-deconv`` prints, and the same as data (for ``--json``).

    Square mappings get one list; non-square ones a list per dimension. Either way the
    last line is the ready-to-paste layer for the top choice.
    """
    options = {"kernel": kernel, "stride": stride, "max_kernel": max_kernel, "dilation": dilation}
    (h_in, w_in), (h_out, w_out) = _pair(tuple(size_in), "--in"), _pair(tuple(size_out), "--out")
    heights, widths = solve_conv_transpose_2d((h_in, w_in), (h_out, w_out), **options)
    best = DeconvSetting2d(heights[0], widths[0])
    limits = f"kernels {kernel}" if kernel is not None else f"kernels up to {max_kernel}"
    limits += f", stride {stride}" if stride is not None else ""
    limits += f", dilation {dilation}"
    square = (h_in, h_out) == (w_in, w_out)
    lines: list[str] = []
    dims = [("", h_in, h_out, heights)] if square else [("height", h_in, h_out, heights), ("width", w_in, w_out, widths)]
    for label, d_in, d_out, settings in dims:
        prefix = f"{label}: " if label else ""
        lines.append(f"{prefix}ConvTranspose2d settings mapping {d_in} → {d_out} ({limits}), best first:")
        lines.extend(_solution_table(settings, d_in))
        lines.append(f"  check #1: H_out = {_formula(settings[0], d_in)}")
        lines.append("")
    lines.append("ranking: kernel = stride without padding first (the clean inverse of a stride-s downsampling),")
    lines.append("then even kernels; settings that need output_padding come last (checkerboard-prone).")
    if best.checkerboard_prone:
        lines.append("note: the top choice is checkerboard-prone; consider Upsample + Conv2d, or resize to a size kernel = stride reaches.")
    lines.append("top choice:")
    lines.append(f"  {best.to_torch(in_channels, out_channels)}")

    def as_dicts(settings: list[DeconvSetting]) -> list[dict[str, Any]]:
        return [
            {**dataclasses.asdict(s), "checkerboard_prone": s.checkerboard_prone, "clean_inverse": s.clean_inverse,
             "note": s.note}
            for s in settings
        ]

    data = {
        "in": [h_in, w_in],
        "out": [h_out, w_out],
        "height": as_dicts(heights),
        "width": as_dicts(widths),
        "top": best.to_torch(in_channels, out_channels),
    }
    return "\n".join(lines), data


# -- parsing sizes typed by users ----------------------------------------------------


def parse_size(text: str, *, what: str = "size") -> tuple[int, ...]:
    """Parse '28', '28x28' or '1x28x28' (also with '×' or ',') into integers."""
    cleaned = text.strip().lower().replace("×", "x").replace(",", "x")
    try:
        values = tuple(int(part) for part in cleaned.split("x"))
    except ValueError:
        raise ConvaeError(f"{what} {text!r} is not a size like 28 or 28x28") from None
    if not values or any(v < 1 for v in values):
        raise ConvaeError(f"{what} {text!r} must be positive integers like 28x28")
    return values


def parse_hw(text: str, *, what: str = "size") -> tuple[int, int]:
    """'28' → (28, 28); '14x20' → (14, 20); anything else is a one-line error."""
    values = parse_size(text, what=what)
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) == 2:
        return (values[0], values[1])
    raise ConvaeError(f"{what} {text!r} must be H or HxW")

