"""Restoration benchmark: denoising (MNIST, Fashion-MNIST) and colorization (CIFAR-10).

Run: ``python benchmarks/restore.py`` (needs real MNIST, Fashion-MNIST and the CIFAR-10 PNG
copy via $CONVAE_DATA or ../shared/data). Each job trains one run with
``task=denoise|colorize`` and scores it with ``convae evaluate``'s code path
(:func:`convae.applications.evaluate.evaluate_run`): PSNR/SSIM on the full test split of

* the input itself (the noisy image; for colorization the gray image replicated to RGB),
* the classical baseline (denoising: the best Gaussian or median filter, parameter chosen on
  2,000 held-out training images; colorization: gray + the mean colour of each gray level),
* the trained convae model.

Writes benchmarks/results/restore.json and benchmarks/results/restore.md (the README table).
Training uses one torch thread by default: on a small shared CPU two threads fighting other
jobs were measured many times slower than one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import data_root, machine, write_results

from convae.applications.evaluate import evaluate_run
from convae.data import load_splits
from convae.models import get_preset
from convae.run import read_metrics
from convae.training import TrainConfig, Trainer

# Chosen by short pilots on 20,000 training images (see docs/restore.md). The denoiser is the
# `conv` preset, narrowed to width 16 (2× faster) with a 128-value code: for heavy noise a dense
# code's shape prior beat the spatial-code presets (`strided` 32,32 reached 17.6 dB on MNIST at
# σ=0.5 after 5 epochs, `conv` 18.6 dB after a third of one). The colorizer must pass the luma
# through almost exactly, which a bottleneck cannot; the one-level `strided` preset (16×16×64
# code, 3×3 context) did best of the presets tried (conv-pool, unpool, unpool-2level, strided 32,64).
DENOISER = dict(model="conv", args={"width": 16, "latent_dim": 128}, train={"epochs": 1, "batch_size": 64, "lr": 2e-3})
# The colorizer keeps the gray input as its luma and adds a smoothed colour offset (the
# "chroma" output head, convae.models.heads): a plain RGB output lost SSIM rebuilding the luma.
COLORIZER = dict(model="strided", args={"channels": (64,)},
                 train={"epochs": 8, "batch_size": 64, "lr": 2e-3, "color_output": "chroma:4:0.6"})

RESULT = Path(__file__).parent / "results" / "restore.json"

JOBS: list[dict[str, Any]] = [
    dict(label="MNIST, Gaussian σ=0.5", dataset="mnist", task="denoise", noise="gaussian:0.5", **DENOISER),
    dict(label="MNIST, salt-and-pepper 0.2", dataset="mnist", task="denoise", noise="salt-pepper:0.2", **DENOISER),
    dict(label="Fashion-MNIST, Gaussian σ=0.5", dataset="fashion-mnist", task="denoise", noise="gaussian:0.5",
         **DENOISER),
    dict(label="Fashion-MNIST, salt-and-pepper 0.2", dataset="fashion-mnist", task="denoise",
         noise="salt-pepper:0.2", **DENOISER),
    dict(label="CIFAR-10 colorization (gray → RGB)", dataset="cifar10", task="colorize", noise=None, **COLORIZER),
]


def run_job(job: dict[str, Any], root: Path, work: Path, seed: int, threads: int, epochs: int | None,
            limit: int | None) -> dict[str, Any]:
    train = dict(job["train"])
    if epochs is not None:
        train["epochs"] = epochs
    config = TrainConfig(dataset=job["dataset"], data_dir=str(root), model=job["model"], model_args=job["args"],
                         task=job["task"], noise=job["noise"], seed=seed, threads=threads, **train)
    run_dir = work / f"{job['dataset']}-{job['task']}-{(job['noise'] or 'gray').replace(':', '')}"
    sets: dict[str, Any] = {}
    if limit:  # a quick check of the script on part of the training split
        train_set, test_set = load_splits(job["dataset"], data_dir=str(root))
        sets = {"train_set": train_set.subset(range(min(limit, len(train_set)))), "test_set": test_set}
    trainer = Trainer(config, run_dir, progress=False, **sets)
    started = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = evaluate_run(run_dir, split="test", device="cpu")
    eval_seconds = time.perf_counter() - started
    rows = read_metrics(run_dir)
    cfg = trainer.config
    return {
        "label": job["label"], "dataset": job["dataset"], "task": job["task"], "corruption": result["corruption"],
        "model": job["model"],
        "model_args": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.model_args.items()},
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "loss": cfg.loss, "seed": seed,
        "color_output": cfg.color_output,
        "threads": threads, "train_images": len(trainer.train_set),
        "test_images": result["images"],
        "input": result["input"], "input_psnr": result["input_psnr"], "input_ssim": result["input_ssim"],
        "baseline": result["baseline"], "baseline_psnr": result["baseline_psnr"],
        "baseline_ssim": result["baseline_ssim"], "baselines": result.get("baselines"),
        "convae_psnr": result["psnr"], "convae_ssim": result["ssim"], "convae_mse": result["mse"],
        "beats_input": result["psnr"] > result["input_psnr"] and result["ssim"] > result["input_ssim"],
        "beats_baseline": result["psnr"] > result["baseline_psnr"] and result["ssim"] > result["baseline_ssim"],
        "final_train_loss": rows[-1]["train_loss"], "final_test_loss": rows[-1]["test_loss"],
        "epoch_seconds": [row["seconds"] for row in rows],
        "train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
    }


def _short_baseline(row: dict[str, Any]) -> str:
    return row["baseline"].split(",")[0].replace("gray + the ", "gray + ")


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README table; the best PSNR and the best SSIM of each row in bold."""
    lines = [
        "| task | input PSNR / SSIM | classical baseline | baseline PSNR / SSIM | convae PSNR / SSIM | model | epochs "
        "| train time |",
        "|---|---:|---|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in get_preset(row["model"]).params.items()}
        args = ",".join(f"{k}={'×'.join(map(str, v)) if isinstance(v, list) else v}"
                        for k, v in row["model_args"].items() if v != defaults.get(k))  # what the job changed
        cells = [(row["input_psnr"], row["input_ssim"]), (row["baseline_psnr"], row["baseline_ssim"]),
                 (row["convae_psnr"], row["convae_ssim"])]
        if row.get("color_output"):
            args += f", {row['color_output']} output"
        best_psnr, best_ssim = max(c[0] for c in cells), max(c[1] for c in cells)
        text = [f"{'**' if p == best_psnr else ''}{p:.2f} dB{'**' if p == best_psnr else ''} / "
                f"{'**' if q == best_ssim else ''}{q:.3f}{'**' if q == best_ssim else ''}" for p, q in cells]
        lines.append(
            f"| {row['label']} | {text[0]} | {_short_baseline(row)} | {text[1]} | {text[2]} | {row['model']} {args} | "
            f"{row['epochs']} | {row['train_seconds']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run only jobs whose label contains this text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and evaluation")
    parser.add_argument("--epochs", type=int, help="override every job's epochs (quick checks)")
    parser.add_argument("--limit", type=int, help="train on the first N training images only (quick checks)")
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("--no-write", action="store_true", help="print the table but write no result files")
    parser.add_argument("--table-only", action="store_true", help="rewrite restore.md from restore.json, train nothing")
    args = parser.parse_args()
    if args.table_only:
        table = markdown(json.loads(RESULT.read_text(encoding="utf-8"))["rows"])
        (Path(__file__).parent / "results" / "restore.md").write_text(table, encoding="utf-8")
        print(table)
        return
    torch.set_num_threads(args.threads)
    root = data_root()
    work = args.keep or Path(tempfile.mkdtemp(prefix="convae-restore-"))
    rows = []
    for job in JOBS:
        if args.only and args.only.lower() not in job["label"].lower():
            continue
        print(f"== {job['label']}", flush=True)
        row = run_job(job, root, work, args.seed, args.threads, args.epochs, args.limit)
        rows.append(row)
        print(f"   input {row['input_psnr']:.2f} dB  baseline {row['baseline_psnr']:.2f} dB ({_short_baseline(row)})  "
              f"convae {row['convae_psnr']:.2f} dB / SSIM {row['convae_ssim']:.3f}  train {row['train_seconds']} s",
              flush=True)
    if args.only and RESULT.exists():  # a partial rerun replaces its rows and keeps the others
        fresh = {row["label"]: row for row in rows}
        kept = {row["label"]: row for row in json.loads(RESULT.read_text(encoding="utf-8"))["rows"]}
        kept.update(fresh)
        rows = [kept[job["label"]] for job in JOBS if job["label"] in kept]
    table = markdown(rows)
    if not args.no_write:
        write_results("restore.json", {"machine": machine(), "rows": rows})
        (Path(__file__).parent / "results" / "restore.md").write_text(table, encoding="utf-8")
    print(table)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
