"""Reconstruction quality per code size: the `conv` preset against PCA and the CNTK numbers.

Run: ``python benchmarks/quality.py`` (needs real MNIST and Fashion-MNIST via $CONVAE_DATA or
../shared/data). For each dataset and code size (16, 49, 196 values) it trains the `conv`
preset with the settings in ``RECIPES``, fits PCA with the same number of components in the
same run, and records the test RMSE of both (sqrt of the mean squared error per pixel over
the whole test split, pixels in [0, 1]) beside the published CNTK figures.

Time-to-quality: the MNIST 49-d training also scores the whole test split every
``--eval-every`` optimizer steps (through an optimizer post-step hook) until its RMSE is
below both PCA-49 and CNTK's 0.223. The training clock excludes those evaluations: it is the
time since ``Trainer.fit`` was called (model building and config writing included) minus the
time spent in the hook. Both wall-clock and process CPU seconds are recorded, because the
machine these numbers came from was shared: with one torch thread, CPU seconds are what an
unshared core would have needed.

``--only DATASET:CODE`` runs one training (results are merged into quality.json, so several
processes can fill it in parallel); ``--pca-only`` fits PCA only; ``--table-only`` rewrites
quality.md from quality.json.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import RESULTS, data_root, machine

from convae.applications.evaluate import evaluate_run
from convae.data import ImageSet, load_splits
from convae.run import read_metrics
from convae.training import TrainConfig, Trainer, evaluate_loss, loss_function

DATASETS = ("mnist", "fashion-mnist")
CODES = (16, 49, 196)
#: Published CNTK deconvolution-example test RMSE on MNIST, by code size.
CNTK = {49: 0.223, 196: 0.131}
#: MNIST test RMSE targets of issue #8.
TARGETS = {16: 0.080, 49: 0.045, 196: 0.022}
TIME_TO_QUALITY_TARGET_S = 5.0
OUT = RESULTS

#: The `conv` preset settings per code size (found with short 1-thread runs; see docs/quality.md).
#: 16-d adds a dense layer of 256 on each side of the code: its curve was flat without one
#: (0.0867), and with it the MNIST run reached 0.0805 (2 threads, 18 epochs).
RECIPES: dict[int, dict[str, Any]] = {
    code: {
        "model_args": {"latent_dim": code, "width": 16, "blocks": 0, **({"hidden": 256} if code == 16 else {})},
        "epochs": 12, "batch_size": 32, "lr": 3e-3, "lr_schedule": "cosine",
    }
    for code in CODES
}


def pca_rmse(train: ImageSet, test: ImageSet, codes: tuple[int, ...]) -> dict[int, dict[str, float]]:
    """Test RMSE of PCA with k components, fitted on the training split (one fit, nested k)."""
    from sklearn.decomposition import PCA

    x_train = train.images.reshape(len(train), -1).numpy().astype(np.float32) / 255.0
    x_test = test.images.reshape(len(test), -1).numpy().astype(np.float32) / 255.0
    started = time.perf_counter()
    pca = PCA(n_components=max(codes), svd_solver="covariance_eigh").fit(x_train)
    fit_seconds = time.perf_counter() - started
    centred = x_test - pca.mean_
    out = {}
    for k in codes:
        basis = pca.components_[:k]
        recon = np.clip((centred @ basis.T) @ basis + pca.mean_, 0.0, 1.0)
        unclipped = (centred @ basis.T) @ basis + pca.mean_
        out[k] = {
            "rmse": float(np.sqrt(np.mean((recon - x_test) ** 2, dtype=np.float64))),
            "rmse_unclipped": float(np.sqrt(np.mean((unclipped - x_test) ** 2, dtype=np.float64))),
            "fit_seconds_all_k": round(fit_seconds, 1),
        }
    return out


class _Clock:
    """Training time with evaluation time taken out: wall and process CPU seconds."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        self.paused_wall = self.paused_cpu = 0.0

    def now(self) -> tuple[float, float]:
        return (time.perf_counter() - self.wall0 - self.paused_wall, time.process_time() - self.cpu0 - self.paused_cpu)


class _TimedTrainer(Trainer):
    """A Trainer whose optimizer scores the test split every ``every`` steps until ``thresholds`` are crossed."""

    def __init__(self, *args: Any, every: int, thresholds: dict[str, float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.every, self.thresholds = every, dict(thresholds)
        self.crossed: dict[str, dict[str, float]] = {}
        self.curve: list[dict[str, float]] = []
        self.clock = _Clock()

    def _optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        optimizer = super()._optimizer(model)
        steps = [0]
        loss_fn = loss_function("mse")

        def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            steps[0] += 1
            if len(self.crossed) == len(self.thresholds) or steps[0] % self.every:
                return
            wall, cpu = self.clock.now()
            pause_wall, pause_cpu = time.perf_counter(), time.process_time()
            mse = evaluate_loss(model, self.test_set.images, loss_fn, 1000, self.device)
            rmse = math.sqrt(mse)
            self.curve.append({"step": steps[0], "train_wall_s": round(wall, 2), "train_cpu_s": round(cpu, 2),
                               "test_rmse": round(rmse, 5)})
            for name, limit in self.thresholds.items():
                if name not in self.crossed and rmse < limit:
                    self.crossed[name] = self.curve[-1]
            self.clock.paused_wall += time.perf_counter() - pause_wall
            self.clock.paused_cpu += time.process_time() - pause_cpu

        optimizer.register_step_post_hook(hook)
        return optimizer


def train_one(dataset: str, code: int, splits: tuple[ImageSet, ImageSet], root: Path, work: Path, seed: int,
              threads: int, pca: dict[int, dict[str, float]], eval_every: int,
              epochs: int | None = None) -> dict[str, Any]:
    recipe = dict(RECIPES[code], **({"epochs": epochs} if epochs else {}))
    config = TrainConfig(dataset=dataset, data_dir=str(root), model="conv", seed=seed, threads=threads,
                         **{k: v for k, v in recipe.items()})
    run_dir = work / f"{dataset}-{code}"
    train, test = splits
    timed = dataset == "mnist" and code == 49
    if timed:
        thresholds = {"pca": pca[49]["rmse"], "cntk": CNTK[49]}
        trainer: Trainer = _TimedTrainer(config, run_dir, train_set=train, test_set=test, progress=False,
                                         every=eval_every, thresholds=thresholds)
    else:
        trainer = Trainer(config, run_dir, train_set=train, test_set=test, progress=False)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if timed:
        trainer.clock = _Clock()  # type: ignore[attr-defined]
    trainer.fit()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rows = read_metrics(run_dir)
    result = evaluate_run(run_dir, split="test", device="cpu")
    paused_wall = trainer.clock.paused_wall if timed else 0.0  # type: ignore[attr-defined]
    paused_cpu = trainer.clock.paused_cpu if timed else 0.0  # type: ignore[attr-defined]
    epoch_seconds = sum(row["seconds"] for row in rows) - paused_wall
    row: dict[str, Any] = {
        "dataset": dataset, "code_size": code, "model": "conv",
        "model_args": trainer.config.model_args, "epochs": trainer.config.epochs,
        "batch_size": trainer.config.batch_size, "lr": trainer.config.lr,
        "lr_schedule": trainer.config.lr_schedule, "loss": trainer.config.loss, "seed": seed, "threads": threads,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),  # type: ignore[union-attr]
        "test_rmse": result["rmse"], "test_psnr": result["psnr"], "test_ssim": result["ssim"],
        "pca_rmse": pca[code]["rmse"], "cntk_rmse": CNTK.get(code) if dataset == "mnist" else None,
        "target_rmse": TARGETS.get(code) if dataset == "mnist" else None,
        # Epoch loops only (the trainer's per-epoch seconds), evaluation hooks taken out.
        "train_seconds_wall": round(epoch_seconds, 1),
        # Everything fit() did (incl. per-epoch test scoring and checkpoints), hooks taken out.
        "fit_seconds_wall": round(wall - paused_wall, 1),
        "fit_seconds_cpu": round(cpu - paused_cpu, 1),
        "test_rmse_per_epoch": [round(math.sqrt(r["test_loss"]), 5) for r in rows],
        "epoch_seconds_wall": [r["seconds"] for r in rows],
    }
    if row["target_rmse"] is not None:
        row["meets_target"] = row["test_rmse"] <= row["target_rmse"]  # strict: 0.0453 misses 0.045
    if timed:
        row["time_to_quality"] = {
            "eval_every_steps": eval_every,
            "thresholds": thresholds,
            "crossed": trainer.crossed,  # type: ignore[attr-defined]
            "curve": trainer.curve,  # type: ignore[attr-defined]
            "target_s": TIME_TO_QUALITY_TARGET_S,
            "clock": "seconds since Trainer.fit was called (setup included), evaluation hooks excluded",
        }
    return row


def merge(update: dict[str, Any]) -> dict[str, Any]:
    """Merge rows/PCA into quality.json under a file lock (parallel --only processes)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "quality.json"
    with open(OUT / ".quality.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {"rows": [], "pca": {}, "machines": {}}
        for key, value in update.get("pca", {}).items():
            data["pca"][key] = value
        for new in update.get("rows", []):
            data["rows"] = [r for r in data["rows"]
                            if (r["dataset"], r["code_size"]) != (new["dataset"], new["code_size"])] + [new]
            data["machines"][f"{new['dataset']}:{new['code_size']}"] = machine()
        data["rows"].sort(key=lambda r: (DATASETS.index(r["dataset"]), r["code_size"]))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    return data


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "| dataset | code | convae `conv` test RMSE | PCA (same k) | CNTK | target | epochs | threads | train time (wall / CPU) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in data["rows"]:
        cntk = "—" if row["cntk_rmse"] is None else f"{row['cntk_rmse']:.3f}"
        target = "—" if row["target_rmse"] is None else f"≤ {row['target_rmse']:.3f}"
        met = None if row["target_rmse"] is None else row["test_rmse"] <= row["target_rmse"]
        verdict = "" if met is None else (" ✓" if met else " ✗")
        lines.append(
            f"| {row['dataset']} | {row['code_size']} | {row['test_rmse']:.4f}{verdict} | {row['pca_rmse']:.4f} | "
            f"{cntk} | {target} | {row['epochs']} | {row['threads']} | {row['fit_seconds_wall']:.0f} s / "
            f"{row['fit_seconds_cpu']:.0f} s |"
        )
    timed = [row for row in data["rows"] if "time_to_quality" in row]
    for row in timed:
        ttq = row["time_to_quality"]
        lines.append("")
        lines.append(f"Time to quality (MNIST, 49-d, test RMSE scored every {ttq['eval_every_steps']} steps, "
                     "evaluation excluded from the clock; wall / CPU seconds of training):")
        lines.append("")
        for name, label in (("pca", "PCA-49"), ("cntk", "CNTK 0.223")):
            hit = ttq["crossed"].get(name)
            limit = ttq["thresholds"][name]
            if hit:
                lines.append(f"- below {label} ({limit:.4f}): step {hit['step']}, {hit['train_wall_s']:.1f} s wall / "
                             f"{hit['train_cpu_s']:.1f} s CPU (RMSE {hit['test_rmse']:.4f}); target ≤ "
                             f"{ttq['target_s']:.0f} s")
            else:
                lines.append(f"- below {label} ({limit:.4f}): not reached while scored")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="DATASET:CODE[,...], e.g. mnist:49,fashion-mnist:49 (merged into quality.json)")
    parser.add_argument("--pca-only", action="store_true")
    parser.add_argument("--table-only", action="store_true", help="rewrite quality.md from quality.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=25, help="time-to-quality scoring interval (steps)")
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument("--epochs", type=int, help="override the recipes' epochs (smoke tests)")
    parser.add_argument("--train-limit", type=int, help="train on the first N images only (smoke tests)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="write quality.json/.md here")
    args = parser.parse_args()
    global OUT
    OUT = args.results
    torch.set_num_threads(args.threads)
    if args.table_only:
        data = json.loads((OUT / "quality.json").read_text())
    else:
        root = data_root()
        jobs = [(d, c) for d in DATASETS for c in CODES]
        if args.only:
            jobs = [(name, int(code)) for name, _, code in (job.partition(":") for job in args.only.split(","))]
        work = args.keep or Path(tempfile.mkdtemp(prefix="convae-quality-"))
        data = {}
        for dataset in dict.fromkeys(d for d, _ in jobs):
            splits = load_splits(dataset, data_dir=root)
            if args.train_limit:
                splits = (splits[0].subset(torch.arange(args.train_limit)), splits[1])
            pca = pca_rmse(*splits, CODES)
            data = merge({"pca": {dataset: {str(k): v for k, v in pca.items()}}})
            print(f"== {dataset} PCA: " + ", ".join(f"{k}: {v['rmse']:.4f}" for k, v in pca.items()), flush=True)
            if args.pca_only:
                continue
            for code in [c for d, c in jobs if d == dataset]:
                row = train_one(dataset, code, splits, root, work, args.seed, args.threads, pca, args.eval_every,
                                args.epochs)
                data = merge({"rows": [row]})
                print(f"== {dataset} {code}-d: test RMSE {row['test_rmse']:.4f} (PCA {row['pca_rmse']:.4f}), "
                      f"{row['fit_seconds_wall']} s wall / {row['fit_seconds_cpu']} s CPU", flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = markdown(data)
    (OUT / "quality.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
