"""``convae bench speed``: the training-speed suite, from a checkout or an installed package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from convae.cli._app import app, out

bench_app = typer.Typer(help="Benchmarks: how fast convae trains, measured against the reference loop.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command()
def speed(
    jobs: Optional[str] = typer.Option(None, help="comma-separated jobs: fc, unpool, conv-pool, conv (default: all)"),
    epochs: Optional[int] = typer.Option(None, help="epochs for every job (default: fc 10, unpool 2, conv-pool 2, conv 1)"),
    threads: Optional[int] = typer.Option(None, help="torch threads for both sides (default: the cores)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder holding MNIST/ and CIFAR10-png/ (default: $CONVAE_DATA)"),
    limit: Optional[int] = typer.Option(None, help="train on the first N images only (a smoke test, not a measurement)"),
    quick: bool = typer.Option(False, "--quick", help="for a loaded machine: fc 2 epochs, the others 1 epoch on 20k/10k/2k images"),
    out_dir: Path = typer.Option(Path("."), "--out", help="where speed.json and speed.md go"),
) -> None:
    """Time convae's Trainer against the reference DataLoader loop on the same models, side by side."""
    from convae.bench import speed as suite
    from convae.core.atomic import atomic_write_text
    from convae.core.outputs import check_output_file, check_output_folder

    check_output_folder(out_dir, "--out")
    check_output_file(out_dir / "speed.json", "--out", "speed-json")
    check_output_file(out_dir / "speed.md", "--out", "speed-md")
    chosen = [name.strip() for name in jobs.split(",") if name.strip()] if jobs else None
    names, counts, subsets = suite.plan(chosen, quick, epochs)
    results = suite.run_suite(names, data_dir=str(data_dir) if data_dir else None, epochs=counts, subsets=subsets,
                              threads=threads, limit=limit,
                              log=lambda line: out.print(line, markup=False, highlight=False))
    results["plan"] = "quick" if quick else "full"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "speed.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out_dir / "speed.md", suite.markdown(results))
    out.print(suite.markdown(results), markup=False, highlight=False)
    out.print(f"wrote {out_dir / 'speed.json'} and {out_dir / 'speed.md'}")
