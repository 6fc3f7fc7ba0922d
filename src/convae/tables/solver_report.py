"""What `convae solve-deconv` prints: the solver's settings as a table, checked by the formula."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from convae.shapes.arithmetic import as_pair
from convae.shapes.solver import DeconvSetting, DeconvSetting2d, solve_conv_transpose_2d

__all__ = ["solve_report"]


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
    (h_in, w_in), (h_out, w_out) = as_pair(tuple(size_in), "--in"), as_pair(tuple(size_out), "--out")
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
