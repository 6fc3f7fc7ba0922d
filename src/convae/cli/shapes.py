"""Shape tools: the ConvTranspose2d solver and layer-by-layer shape tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from convae.cli._app import app
from convae.core.errors import ConvaeError


@app.command("solve-deconv")
def solve_deconv(
    size_in: str = typer.Option(..., "--in", help="input size H_IN: 14 or 14x14 (HxW for non-square)"),
    size_out: str = typer.Option(..., "--out", help="wanted output size H_OUT: 28 or 28x28"),
    kernel: Optional[int] = typer.Option(None, help="only this kernel size"),
    stride: Optional[int] = typer.Option(None, help="only this stride"),
    max_kernel: int = typer.Option(7, "--max-kernel", help="largest kernel to try"),
    dilation: int = typer.Option(1, help="dilation of the kernel"),
    in_channels: Optional[int] = typer.Option(None, "--in-channels", help="channels for the printed layer"),
    out_channels: Optional[int] = typer.Option(None, "--out-channels", help="channels for the printed layer"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Every ConvTranspose2d (kernel, stride, padding, output_padding) mapping H_IN to H_OUT exactly, best first."""
    from convae.shapes import parse_hw
    from convae.tables import solve_report

    text, data = solve_report(
        parse_hw(size_in, what="--in"), parse_hw(size_out, what="--out"),
        kernel=kernel, stride=stride, max_kernel=max_kernel, dilation=dilation,
        in_channels=in_channels if in_channels is not None else "in_ch",
        out_channels=out_channels if out_channels is not None else "out_ch",
    )
    print(json.dumps(data) if as_json else text)


@app.command("shapes")
def shapes_command(
    target: str = typer.Argument(..., help="a model preset (autoencoder or classifier) or a run directory"),
    input_shape: Optional[str] = typer.Option(None, "--input", help="input CxHxW, HxW or H (default 1x28x28, or the run's)"),
    model_arg: Optional[list[str]] = typer.Option(None, "--model-arg", help="preset parameter KEY=VALUE (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Layer-by-layer table: output shape, parameters and multiply-adds, code size and compression."""
    from convae.applications.run_shapes import table_for_run
    from convae.run.zoo import is_zoo, zoo_run_dir
    from convae.tables.layers import parse_input_shape, table_for_preset

    path = zoo_run_dir(target) if is_zoo(target) else Path(target)
    if path.is_dir():
        if model_arg:
            raise ConvaeError(f"{target}: --model-arg applies to a preset name, not a run directory")
        from convae.run import CONFIG, read_config

        default = tuple(read_config(path)["model"]["input_shape"]) if (path / CONFIG).exists() else (1, 28, 28)
        table = table_for_run(path, parse_input_shape(input_shape, default) if input_shape else None)
    elif path.exists() or "/" in target:
        raise ConvaeError(f"{target}: no such run directory")
    else:
        table = table_for_preset(target, parse_input_shape(input_shape), list(model_arg or []))
    print(json.dumps(table.to_dict()) if as_json else table.to_text())
