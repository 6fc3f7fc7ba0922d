"""Reproduce the reference examples with convae and compare with their published numbers.

Run: ``python benchmarks/reproduce.py`` (needs real MNIST and the CIFAR-10 PNG copy via
$CONVAE_DATA or ../shared/data). Writes benchmarks/results/reproduce.json and
benchmarks/results/reproduce.md (the table the README shows).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import commit, data_root, machine, write_results

from convae.applications.evaluate import evaluate_run
from convae.run import read_metrics
from convae.training import TrainConfig, Trainer

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
         args={}, train={}, metric="train BCE (final model)", published=0.066),
    dict(label="conv-pool on CIFAR-10 (8×8×8 = 512 code)", dataset="cifar10", model="conv-pool",
         args={}, train={"epochs": 10}, metric="test MSE", published=None),
    dict(label="fc on CIFAR-10 with the same 512-value code", dataset="cifar10", model="fc",
         args={"hidden": 512}, train={"epochs": 10, "loss": "mse", "batch_size": 50}, metric="test MSE",
         published=None),
]


def run_job(job: dict[str, Any], root: Path, work: Path, seed: int, epochs: int | None = None) -> dict[str, Any]:
    train = {**job["train"], **({"epochs": epochs} if epochs else {})}
    config = TrainConfig(dataset=job["dataset"], data_dir=str(root), model=job["model"],
                         model_args=job["args"], seed=seed, **train)
    run_dir = work / job["model"] / str(abs(hash(job["label"])))
    trainer = Trainer(config, run_dir, progress=False)
    started = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - started
    rows = read_metrics(run_dir)
    result = evaluate_run(run_dir, split="test", device="cpu")
    cfg = trainer.config
    values = {"test RMSE": result["rmse"], "test MSE": result["mse"]}
    if job["metric"].startswith("train BCE"):
        # The final model over the whole training split; the epoch average is kept beside it.
        values[job["metric"]] = evaluate_run(run_dir, split="train", device="cpu")["bce"]
    ours = values[job["metric"]]
    return {
        "label": job["label"],
        "dataset": job["dataset"],
        "model": job["model"],
        "model_args": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.model_args.items()},
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "loss": cfg.loss,
        "optimizer": cfg.optimizer, "seed": seed,
        "metric": job["metric"], "ours": ours, "published": job["published"],
        "meets_published": meets(ours, job["published"]),
        "test_rmse": result["rmse"], "test_mse": result["mse"], "test_psnr": result["psnr"],
        "test_ssim": result["ssim"], "final_train_loss": rows[-1]["train_loss"],
        "last_epoch_average_train_loss": rows[-1]["train_loss"],
        "train_seconds": round(seconds, 1),
        "commit": commit(),
        **time_to_quality(rows, job["metric"], job["published"]),
    }


def time_to_quality(rows: list[dict[str, Any]], metric: str, published: float | None) -> dict[str, Any]:
    """Training seconds until the published number was first reached, at epoch granularity.

    Test RMSE is sqrt of the epoch's test MSE (the loss of these runs). For the fc job the
    published figure is a training BCE; the epoch's average training loss stands in for it,
    which is conservative: it is higher than the loss of the model at the epoch's end.
    """
    if published is None:
        return {}
    elapsed = 0.0
    for row in rows:
        elapsed += row["seconds"]
        value = row["test_loss"] ** 0.5 if metric == "test RMSE" else row["train_loss"]
        if round(value, 3) <= published:
            return {"quality_reached_after_epoch": row["epoch"], "seconds_to_quality": round(elapsed, 1),
                    "value_at_quality": value}
    return {"quality_reached_after_epoch": None, "seconds_to_quality": None}


def meets(ours: float, published: float | None) -> bool | None:
    """At or below the published figure, at the precision it was published with (3 decimals)."""
    return None if published is None else round(ours, 3) <= published


def _note(row: dict[str, Any]) -> str:
    if row["metric"].startswith("train BCE"):
        return f"average over the 10th epoch while training: {row['last_epoch_average_train_loss']:.4f}"
    if row["metric"] == "test RMSE":
        return f"PSNR {row['test_psnr']:.1f} dB, SSIM {row['test_ssim']:.3f}"
    return f"test RMSE {row['test_rmse']:.4f}, PSNR {row['test_psnr']:.1f} dB"


def _quality(row: dict[str, Any]) -> str:
    if row.get("published") is None:
        return "—"
    if "seconds_to_quality" not in row:
        return "not measured"
    if row["seconds_to_quality"] is None:
        return "not reached"
    return f"{row['seconds_to_quality']:.1f} s (epoch {row['quality_reached_after_epoch']})"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| reference example | metric | published | convae | epochs | train time | time to quality | notes |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        published = "—" if row["published"] is None else f"{row['published']:.3f}"
        verdict = "" if row["meets_published"] is None else (" ✓" if row["meets_published"] else " ✗")
        if row["meets_published"] and row["ours"] > row["published"]:
            verdict = f" = (rounds to {row['published']:.3f})"
        lines.append(
            f"| {row['label']} | {row['metric']} | {published} | {row['ours']:.4f}{verdict} | "
            f"{row['epochs']} | {row['train_seconds']:.0f} s | {_quality(row)} | {_note(row)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="run only the jobs of this MODEL or MODEL:DATASET (merged into the last results)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("--table-only", action="store_true", help="rewrite reproduce.md from reproduce.json")
    parser.add_argument("--epochs", type=int, help="train every job this many epochs (a smoke test; needs --out)")
    parser.add_argument("--out", type=Path, help="write the JSON and table here instead of benchmarks/results/")
    args = parser.parse_args()
    if args.epochs and not args.out:
        parser.error("--epochs changes the recipe: give --out so the committed results stay as they are")
    results = Path(__file__).parent / "results"
    if args.table_only:
        rows = json.loads((results / "reproduce.json").read_text())["rows"]
        for row in rows:
            row["meets_published"] = meets(row["ours"], row["published"])
        (results / "reproduce.md").write_text(markdown(rows), encoding="utf-8")
        print(markdown(rows))
        return
    root = data_root()
    work = args.keep or Path(tempfile.mkdtemp(prefix="convae-reproduce-"))
    rows = []
    for job in JOBS:
        if args.only and args.only not in (job["model"], f"{job['model']}:{job['dataset']}"):
            continue
        print(f"== {job['label']}", flush=True)
        rows.append(run_job(job, root, work, args.seed, args.epochs))
        print(f"   {rows[-1]['metric']}: {rows[-1]['ours']:.4f} (published {rows[-1]['published']}), "
              f"{rows[-1]['train_seconds']} s", flush=True)
    if args.only:  # merge into the last full run instead of dropping its other rows
        previous = Path(__file__).parent / "results" / "reproduce.json"
        if previous.exists():
            fresh = {row["label"] for row in rows}
            kept = [row for row in json.loads(previous.read_text())["rows"] if row["label"] not in fresh]
            order = [job["label"] for job in JOBS]
            rows = sorted(kept + rows, key=lambda row: order.index(row["label"]) if row["label"] in order else 99)
    table = markdown(rows)
    payload = {"machine": machine(), "rows": rows}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "reproduce.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        (args.out / "reproduce.md").write_text(table, encoding="utf-8")
    else:
        write_results("reproduce.json", payload)
        (Path(__file__).parent / "results" / "reproduce.md").write_text(table, encoding="utf-8")
    print(table)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
