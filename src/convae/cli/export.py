"""``convae export``: a run as an ONNX file for onnxruntime, with its parity checked before writing."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from convae.cli._app import app, err, note, open_run, out


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="run directory (autoencoder or classifier)"),
    out_file: Path = typer.Option(..., "--out", help="the .onnx file to write"),
    what: Optional[str] = typer.Option(None, "--what", help="reconstruct (autoencoder default), encode, decode, "
                                       "detect (needs a fitted threshold) or classify (classifier runs)"),
) -> None:
    """Export a run to ONNX: one graph with input `images` (N×C×H×W floats in [0, 1]) and named outputs.

    \b
    Examples:  convae export runs/mnist --out mnist.onnx
               convae export runs/mnist-3 --what detect --out detector.onnx
    Run it anywhere with onnxruntime alone (convae.runtime), or with --engine onnx --onnx FILE on
    detect, reconstruct, denoise and classify predict. Nothing is written unless onnxruntime
    reproduces torch's outputs on seeded images (max |diff| <= 1e-4, verdicts identical).
    """
    from convae.applications.export.onnx_file import RELATIVE, TOLERANCE, export_run

    run = open_run(run_dir, verb="convae export")
    result = export_run(run, out_file, what, log=lambda line: err.print(line, markup=False, highlight=False))
    shape = "x".join(map(str, run.config.input_shape))
    size = f"{result.size / 1e6:.2f} MB" if result.size >= 100_000 else f"{result.size / 1e3:.1f} kB"
    out.print(f"wrote {result.path} ({result.what}, {size}): inputs {', '.join(result.inputs)} "
              f"-> outputs {', '.join(result.outputs)}", markup=False, highlight=False, soft_wrap=True)
    note(f"onnxruntime matches torch to max |diff| {result.max_diff:.2g} (limit {TOLERANCE:g} + {RELATIVE:g}·|value|) on seeded {shape} "
         f"images; the run's digest, preset and input shape are in the file's metadata")
