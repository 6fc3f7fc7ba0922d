"""Training speed on a GPU: images/s of convae's Trainer with the data resident on the device.

Run by benchmarks/gpu_check.sh (``python benchmarks/gpu_speed.py --out DIR``). For ``fc`` on
MNIST and ``conv-pool`` on CIFAR-10 it trains a few epochs per variant (fp32 eager, bf16,
torch.compile) at the preset's batch size and at a large batch, and records the best epoch's
images/s (the first epoch carries the compilation and warm-up). Targets from the speed issue:
≥ 100,000 images/s for fc, ≥ 50,000 for conv-pool. Without the real data it trains on random
images of the same shapes (speed does not depend on the pixels) and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from convae.bench.provenance import commit
from convae.data import ImageSet, load_splits
from convae.run import read_metrics
from convae.training import TrainConfig, Trainer

JOBS = [("fc", "mnist", (1, 28, 28), 100_000), ("conv-pool", "cifar10", (3, 32, 32), 50_000)]
VARIANTS = {"fp32": {}, "bf16": {"precision": "bf16"}, "compile": {"compile": True}}


def data(dataset: str, shape: tuple[int, int, int]) -> tuple[ImageSet, ImageSet, str]:
    try:
        train, test = load_splits(dataset, data_dir=os.environ.get("CONVAE_DATA"))
        return train, test, "real"
    except Exception as error:
        print(f"{dataset}: no real data ({str(error).splitlines()[0]}); random images of the same shape")
        g = torch.Generator().manual_seed(0)
        make = lambda n: ImageSet(torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),  # noqa: E731
                                  torch.zeros(n, dtype=torch.long), ["0"], "train", dataset)
        return make(60_000 if dataset == "mnist" else 50_000), make(10_000), "random"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_speed: no CUDA device")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, dataset, shape, target in JOBS:
            train, test, source = data(dataset, shape)
            for batch in ("preset", 1024):
                for variant, options in VARIANTS.items():
                    config = TrainConfig(dataset=dataset, model=model, epochs=args.epochs, device="cuda", seed=0,
                                         **({} if batch == "preset" else {"batch_size": batch}), **options)
                    run_dir = Path(tmp) / f"{model}-{batch}-{variant}"
                    started = time.perf_counter()
                    Trainer(config, run_dir, train_set=train, test_set=test, progress=False).fit()
                    metrics = read_metrics(run_dir)
                    best = min(m["seconds"] for m in metrics[1:] or metrics)
                    row = {"model": model, "dataset": dataset, "data": source, "batch": batch, "variant": variant,
                           "epochs": len(metrics), "best_epoch_seconds": round(best, 3),
                           "images_per_s": round(len(train) / best), "target_images_per_s": target,
                           "final_train_loss": metrics[-1]["train_loss"],
                           "whole_run_seconds": round(time.perf_counter() - started, 1)}
                    rows.append(row)
                    print(f"{model} batch {batch} {variant}: {row['images_per_s']:,} img/s (target {target:,})")
    result = {"commit": commit(), "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'gpu.json'}")


if __name__ == "__main__":
    main()
