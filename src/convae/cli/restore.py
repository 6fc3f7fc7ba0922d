"""Restoration verbs: denoise and colorize the user's own images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from convae.cli._app import app, engine_option, err, note, onnx_option, open_run, out, plural, print_table, shown
from convae.core.errors import ConvaeError


def print_restoration(run_dir: Path, split: str, result: dict[str, Any]) -> None:
    from convae.applications.restore import comparison_rows

    print_table(f"{run_dir} — {result['task']} ({result['corruption']}), {result['dataset']} {split} split "
                f"({result.get('measured_on') or plural(result['images'], 'image')})", ("restored by", "MSE", "PSNR", "SSIM"),
                [(what, f"{mse:.5f}", f"{psnr:.2f} dB", f"{ssim:.4f}") for what, mse, psnr, ssim in comparison_rows(result)])
    out.print(f"convae gains {result['psnr'] - result['input_psnr']:+.2f} dB over the input and "
              f"{result['psnr'] - result['baseline_psnr']:+.2f} dB over the baseline")
    if result.get("per_level"):
        print_table(f"blind noise ({result['corruption']}) at fixed levels", ("noise", "input PSNR", "convae PSNR",
                    "input SSIM", "convae SSIM"), [(r["noise"], f"{r['input_psnr']:.2f} dB", f"{r['psnr']:.2f} dB",
                                                    f"{r['input_ssim']:.4f}", f"{r['ssim']:.4f}")
                                                   for r in result["per_level"]])
    note(result["conventions"])


def _restore_command(task: str, run_dir: Path, inputs: list[Path], out_dir: Path, device: str,
                     engine: str | None = None, onnx: Path | None = None) -> None:
    """The file verbs' contract: one line per written file, one error line per failed file, exit 2 if any."""
    from convae.applications.export.engine import open_engine
    from convae.applications.restore import restore_files

    run = open_run(run_dir, "autoencoder", f"convae {task}")
    model = open_engine(run, engine, onnx, "reconstruct", f"convae {task}")
    results = restore_files(run, inputs, out_dir, task=task, device=device, engine=model)
    for entry in results:
        if entry["ok"]:
            note = f"  ({entry['note']})" if entry["note"] else ""
            out.print(f"{shown(entry['input'])} -> {shown(entry['output'])}{note}", markup=False, highlight=False,
                      soft_wrap=True)
        else:
            err.print(f"error: {shown(entry['input'])}: {entry['error']}", markup=False, highlight=False, soft_wrap=True)
    failed = sum(not entry["ok"] for entry in results)
    if failed:
        written = len(results) - failed
        rest = f"the other {plural(written, 'image')} were written to {out_dir}" if written else "nothing was written"
        raise ConvaeError(f"{failed} of {len(results)} image(s) failed; {rest}")


@app.command()
def denoise(
    run_dir: Path = typer.Argument(..., help="a run trained with --task denoise"),
    inputs: list[Path] = typer.Argument(..., help="image files and/or folders (searched recursively)"),
    out_dir: Path = typer.Option(..., "--out", help="folder for the restored PNGs (named after the inputs)"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    engine: Optional[str] = engine_option(),
    onnx: Optional[Path] = onnx_option(),
) -> None:
    """Denoise your images: PNGs into --out. Exit code 2 if any file failed (the rest are still written)."""
    _restore_command("denoise", run_dir, inputs, out_dir, device, engine, onnx)


@app.command()
def colorize(
    run_dir: Path = typer.Argument(..., help="a run trained with --task colorize"),
    inputs: list[Path] = typer.Argument(..., help="image files and/or folders (searched recursively); RGB is made gray first"),
    out_dir: Path = typer.Option(..., "--out", help="folder for the RGB PNGs (named after the inputs)"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Colorize gray images: RGB PNGs into --out. Exit code 2 if any file failed (the rest are still written)."""
    _restore_command("colorize", run_dir, inputs, out_dir, device)


@app.command()
def reconstruct(
    run_dir: Path = typer.Argument(..., help="a reconstruction run (from `convae train`)"),
    inputs: list[Path] = typer.Argument(..., help="image files and/or folders (searched recursively)"),
    out_dir: Path = typer.Option(..., "--out", help="folder for the reconstructed PNGs (named after the inputs)"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    engine: Optional[str] = engine_option(),
    onnx: Optional[Path] = onnx_option(),
) -> None:
    """Reconstruct your images with an autoencoder run: PNGs into --out, at each image's own size.

    \b
    Example:  convae reconstruct runs/unpool photos/ --out recon/
    Exit code 2 if any file failed (the rest are still written).
    """
    _restore_command("reconstruct", run_dir, inputs, out_dir, device, engine, onnx)
