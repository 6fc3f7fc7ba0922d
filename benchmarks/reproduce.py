"""Reproduce the reference examples with convae and compare with their published numbers.

Run: ``python benchmarks/reproduce.py`` (needs real MNIST and the CIFAR-10 PNG copy via
$CONVAE_DATA or ../shared/data). Writes benchmarks/results/reproduce.json and
benchmarks/results/reproduce.md (the table the README shows).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import data_root, machine, write_results

from convae.evaluation import evaluate_run
from convae.runs import read_metrics
from convae.train import TrainConfig, Trainer

# (label, dataset, model, model args, training overrides, published metric, published value, how to compare)
JOBS: list[dict[str, Any]] = [
    dict(label="unpool, 1 map, pool 4 (7×7×1 code)", dataset="mnist", model="unpool",
         args={"maps": 1, "pool": 4}, train={"epochs": 3}, metric="test RMSE", published=0.223),
    dict(label="unpool, 3 maps, pool 4 (7×7×3 code)", dataset="mnist", model="unpool",
         args={"maps": 3, "pool": 4}, train={"epochs": 3}, metric="test RMSE", published=0.196),
    dict(label="unpool, 1 map, pool 2 (14×14×1 code)", dataset="mnist", model="unpool",
         args={"maps": 1, "pool": 2}, train={"epochs": 3}, metric="test RMSE", published=0.131),
    dict(label="unpool-2level, 5 then 1 maps, pool 2 twice (7×7×1 code)", dataset="mnist",
         model="unpool-2level", args={}, train={"epochs": 3}, metric="test RMSE", published=None),
    dict(label="fc 784-200-784, BCE, Adam, batch 124, 10 epochs", dataset="mnist", model="fc",
         args={}, train={}, metric="train BCE", published=0.066),
    dict(label="conv-pool on CIFAR-10 (8×8×8 = 512 code)", dataset="cifar10", model="conv-pool",
         args={}, train={"epochs": 10}, metric="test MSE", published=None),
    dict(label="fc on CIFAR-10 with the same 512-value code", dataset="cifar10", model="fc",
         args={"hidden": 512}, train={"epochs": 10, "loss": "mse", "batch_size": 50}, metric="test MSE",
         published=None),
]


def run_job(job: dict[str, Any], root: Path, work: Path, seed: int) -> dict[str, Any]:
    config = TrainConfig(dataset=job["dataset"], data_dir=str(root), model=job["model"],
                         model_args=job["args"], seed=seed, **job["train"])
    run_dir = work / job["model"] / str(abs(hash(job["label"])))
    trainer = Trainer(config, run_dir, progress=False)
    started = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - started
    rows = read_metrics(run_dir)
    result = evaluate_run(run_dir, split="test", device="cpu")
    cfg = trainer.config
    values = {"test RMSE": result["rmse"], "test MSE": result["mse"], "train BCE": rows[-1]["train_loss"]}
    ours = values[job["metric"]]
    return {
        "label": job["label"],
        "dataset": job["dataset"],
        "model": job["model"],
        "model_args": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.model_args.items()},
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "loss": cfg.loss,
        "optimizer": cfg.optimizer, "seed": seed,
        "metric": job["metric"], "ours": ours, "published": job["published"],
        "meets_published": None if job["published"] is None else ours <= job["published"],
        "test_rmse": result["rmse"], "test_mse": result["mse"], "test_psnr": result["psnr"],
        "test_ssim": result["ssim"], "final_train_loss": rows[-1]["train_loss"],
        "train_seconds": round(seconds, 1),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| reference example | metric | published | convae | epochs | train time |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        published = "—" if row["published"] is None else f"{row['published']:.3f}"
        verdict = "" if row["meets_published"] is None else (" ✓" if row["meets_published"] else " ✗")
        lines.append(
            f"| {row['label']} | {row['metric']} | {published} | {row['ours']:.4f}{verdict} | "
            f"{row['epochs']} | {row['train_seconds']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="run only jobs whose model name matches")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    args = parser.parse_args()
    root = data_root()
    work = args.keep or Path(tempfile.mkdtemp(prefix="convae-reproduce-"))
    rows = []
    for job in JOBS:
        if args.only and args.only != job["model"]:
            continue
        print(f"== {job['label']}", flush=True)
        rows.append(run_job(job, root, work, args.seed))
        print(f"   {rows[-1]['metric']}: {rows[-1]['ours']:.4f} (published {rows[-1]['published']}), "
              f"{rows[-1]['train_seconds']} s", flush=True)
    table = markdown(rows)
    write_results("reproduce.json", {"machine": machine(), "rows": rows})
    (Path(__file__).parent / "results" / "reproduce.md").write_text(table, encoding="utf-8")
    print(table)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
