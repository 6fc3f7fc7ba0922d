"""Code verbs: encode images to code files, decode them back to PNGs, export embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from convae.cli._app import app, data_dir_option, fail_files, note, open_run, out, print_table


@app.command()
def encode(
    run_dir: Path = typer.Argument(..., help="run directory"),
    inputs: Optional[list[Path]] = typer.Argument(None, help="image files and/or folders (searched recursively)"),
    dataset: Optional[str] = typer.Option(None, help="encode a dataset split instead (mnist, fashion-mnist, cifar10, ...)"),
    split: str = typer.Option("test", help="train or test (with --dataset)"),
    out_path: Path = typer.Option(..., "--out", help="code file: .npz (codes, ids, labels) or .cvc (compact binary); "
                                  "for a codec run, a folder (one .cvc per image) or FILE.cvc (all in one)"),
    bits: Optional[int] = typer.Option(None, help="bits per code value: 4, 6, 8 (default), or 32 (float32, no "
                                       "quantization); not for codec runs, whose rate λ set in training"),
    fmt: Optional[str] = typer.Option(None, "--format", help="npz or bin (default: bin for .cvc/.bin, else npz)"),
    limit: Optional[int] = typer.Option(None, help="only the first N images of --dataset"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    data_dir: Optional[Path] = data_dir_option(),
) -> None:
    """Encode images into a code file, quantized per code channel; prints its size in bits per pixel.

    \b
    Examples:  convae encode runs/unpool photos/ --out codes.cvc --bits 6
               convae encode runs/unpool --dataset mnist --out test.npz
               convae encode runs/codec photos/ --out codes/      (a codec run: one bitstream per image)
    A run trained with --patch encodes each file at its own size, as one code per tile of the patch;
    convae decode puts the tiles back together.
    Exit code 2 if a file could not be read (the others are still encoded).
    """
    from convae.applications.codes import encode_run

    run = open_run(run_dir, "autoencoder", "convae encode", data_dir=data_dir)
    result = encode_run(run, out_path, inputs=inputs or [], dataset=dataset, split=split, bits=bits, fmt=fmt,
                        limit=limit, device=device)
    if result.get("codec"):
        where = result["out"] if result["packed"] else f"{result['out']}/ ({result['images']} file(s))"
        out.print(f"wrote {where}: {result['images']} image(s), {result['pixels']:,} pixels, {result['bytes']:,} bytes "
                  f"= {result['bpp']:.4f} bits per pixel (the model's estimate: {result['bpp_estimate']:.4f})",
                  markup=False, highlight=False, soft_wrap=True)
        fail_files(result["failed"], result["images"] + len(result["failed"]),
                   f"the other {result['images']} were encoded")
        return
    note = f"; {result['converted']} image(s) converted to the run's input shape" if result["converted"] else ""
    switches = f", plus {result['switch_levels']} level(s) of pool switches" if result["switch_levels"] else ""
    what = (f"{result['images']} image(s) at full size in {result['tiles']} tile codes" if "tiles" in result
            else f"{result['images']} codes")
    out.print(f"wrote {result['out']}: {what} of {'×'.join(map(str, result['code_shape']))} at "
              f"{result['bits']} bits{switches} ({result['format']}), {result['bytes']:,} bytes = "
              f"{result['bpp']:.4f} bits per pixel{note}", markup=False, highlight=False, soft_wrap=True)
    fail_files(result["failed"], result["images"] + len(result["failed"]), f"the other {result['images']} were encoded")


@app.command()
def decode(
    run_dir: Path = typer.Argument(..., help="the run that encoded the codes"),
    codes: Path = typer.Argument(..., help="code file written by `convae encode` (.npz or .cvc); for a codec run "
                                 "also a folder of .cvc files"),
    out_dir: Path = typer.Option(..., "--out", help="folder for the reconstructed PNGs"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Decode a code file back into PNG images (refuses codes from another run)."""
    from convae.applications.codes import decode_file

    paths = decode_file(run_dir, codes, out_dir, device=device)
    out.print(f"wrote {len(paths)} PNG(s) to {out_dir}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def embed(
    run_dir: Path = typer.Argument(..., help="run directory"),
    dataset: Optional[str] = typer.Option(None, help="dataset to embed (default: the run's)"),
    split: str = typer.Option("test", help="train or test"),
    out_path: Path = typer.Option(..., "--out", help="EMB.csv (one row per image) or EMB.npz"),
    limit: Optional[int] = typer.Option(None, help="only the first N images"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    data_dir: Optional[Path] = data_dir_option(),
) -> None:
    """Export the (float) codes of a dataset split with their ids and labels."""
    from convae.applications.codes import embed_run

    run = open_run(run_dir, "autoencoder", "convae embed", data_dir=data_dir)
    result = embed_run(run, out_path, dataset=dataset, split=split, limit=limit, device=device)
    out.print(f"wrote {result['out']}: {result['images']} codes of {result['dims']} values", markup=False,
              highlight=False, soft_wrap=True)


def print_rate(run: Any, split: str, images: int, as_json: bool, device: str) -> None:
    """`convae evaluate --rate`: the rate–distortion table, and where its JSON and figure went."""
    import json

    from convae.applications.codes import evaluate_rate, rate_table_rows

    result = evaluate_rate(run, split=split, limit=images, device=device)
    if as_json:
        print(json.dumps(result))
        return
    print_table(f"{run.path} — rate–distortion on {result['images']} {result['dataset']} {split} images "
                f"({'×'.join(map(str, result['image_shape']))}, "
                f"{'code ' + '×'.join(map(str, result['code_shape'])) if result['code_shape'] else 'entropy-coded'})",
                ("codec", "setting", "bpp per image", "bpp amortised", "PSNR", "SSIM"), rate_table_rows(result))
    note(result["conventions"])
    out.print(f"wrote {run.path / f'rate-{split}.json'} and {result['figure']}", markup=False, highlight=False)
