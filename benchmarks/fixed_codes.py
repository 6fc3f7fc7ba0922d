"""Compact codes benchmark: rate–distortion of convae codes vs PNG, JPEG and WebP.

Run: ``python benchmarks/fixed_codes.py --keep /tmp/convae-codes-runs`` (needs real MNIST,
Fashion-MNIST and the CIFAR-10 PNG copy via $CONVAE_DATA or ../shared/data).

For each dataset it trains the ``conv`` preset at two code sizes (``latent_dim``), and for
MNIST also the reference ``unpool`` preset (7×7×1 code plus max-pool switches) — or reuses
the runs already trained in ``--keep`` — and then measures, on a seeded random ``--images`` (1000) test
images, with :func:`convae.applications.codes.rate_distortion` (the code path of
``convae evaluate --rate``):

* convae codes quantized to 4, 6 and 8 bits per value (per-channel min/max scale), written
  in the ``.cvc`` binary container (zlib-compressed payload) exactly as ``convae encode
  --format bin`` writes them;
* PNG (lossless, compress level 9), JPEG (Pillow, qualities 10–95) and WebP (Pillow,
  qualities 10–95), one file per image.

Bits per pixel (bpp) are counted per *pixel position* (H×W, not H×W×C) and shown two ways:
``bpp_per_image`` counts every byte of a file that holds one image (container header,
scales and the weights hash included for convae; the whole PNG/JPEG/WebP file for the
others), ``bpp_amortised`` spreads one file header over the whole set (convae: one file
holding all codes; image codecs: the mean file size minus the part of the file that is the
same for every image, i.e. the bytes of the smallest headers, counted once). The decoder
weights are not counted in either: they are shared, like a codec's implementation.

Writes benchmarks/results/fixed_codes.json, benchmarks/results/fixed_codes.md (the README table) and
benchmarks/results/codes-DATASET.png (the rate–distortion plots).
Training uses one torch thread: on this small shared CPU that is the fastest setting.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import data_root, machine, write_results

from convae.data import load_splits
from convae.run import read_metrics
from convae.training import TrainConfig, Trainer

DATASETS = {
    "mnist": {"label": "MNIST", "latent_dims": (16, 64, "unpool")},
    "fashion-mnist": {"label": "Fashion-MNIST", "latent_dims": (16, 64)},
    "cifar10": {"label": "CIFAR-10", "latent_dims": (64, 256)},
}
#: conv preset narrowed to width 16 (about 2× faster than 32 on CPU); five epochs over the whole
#: training split, batch 64, lr 2e-3 annealed with a cosine schedule (a few minutes per model on
#: the idle 2-core machine).
MODEL = {"model": "conv", "width": 16, "levels": 2}
TRAIN = {"epochs": 5, "batch_size": 64, "lr": 2e-3, "lr_schedule": "cosine"}
#: The trainer's per-epoch test loss is computed on this many test images (it is not the benchmark's score).
TRAIN_TEST_IMAGES = 2000
#: One extra MNIST run: the reference `unpool` preset (1 map, pool 4: a 7×7×1 code whose max-pool
#: switches, 4 bits per code value, are stored and counted in the rate).
UNPOOL = {"maps": 1, "pool": 4, "out_activation": "none"}
BITS = (4, 6, 8)
RESULT = Path(__file__).parent / "results" / "fixed_codes.json"


def run_name(dataset: str, latent_dim: int | str) -> str:
    if latent_dim == "unpool":
        return f"{dataset}-unpool-m{UNPOOL['maps']}-p{UNPOOL['pool']}"
    return f"{dataset}-conv-w{MODEL['width']}-z{latent_dim}"


def model_of(latent_dim: int | str) -> tuple[str, dict[str, Any]]:
    if latent_dim == "unpool":
        return "unpool", dict(UNPOOL)
    return MODEL["model"], {"latent_dim": latent_dim, "width": MODEL["width"], "levels": MODEL["levels"]}


def train_run(dataset: str, latent_dim: int | str, root: Path, work: Path, seed: int, threads: int
              ) -> tuple[Path, dict[str, Any]]:
    """Train (or reuse) one run; return its directory and what training cost."""
    run_dir = work / run_name(dataset, latent_dim)
    rows = read_metrics(run_dir) if (run_dir / "model.safetensors").exists() else []
    if rows and rows[-1].get("epoch") == TRAIN["epochs"]:
        return run_dir, {"reused": True, "epoch_seconds": [row.get("seconds") for row in rows],
                         "final_train_loss": rows[-1].get("train_loss"), "final_test_loss": rows[-1].get("test_loss")}
    model, model_args = model_of(latent_dim)
    config = TrainConfig(dataset=dataset, data_dir=str(root), model=model, model_args=model_args,
                         seed=seed, threads=threads, **TRAIN)
    train_set, test_set = load_splits(dataset, data_dir=str(root))
    trainer = Trainer(config, run_dir, progress=False, train_set=train_set,
                      test_set=test_set.subset(range(TRAIN_TEST_IMAGES)))
    started = time.perf_counter()
    trainer.fit()
    rows = read_metrics(run_dir)
    return run_dir, {"reused": False, "train_seconds": round(time.perf_counter() - started, 1),
                     "epoch_seconds": [row.get("seconds") for row in rows],
                     "final_train_loss": rows[-1].get("train_loss"), "final_test_loss": rows[-1].get("test_loss")}


def markdown(payload: dict[str, Any]) -> str:
    """One table per dataset: every codec setting with bpp (per image / amortised), PSNR, SSIM."""
    lines = [f"Rate–distortion on {payload['settings']['images']} test images of each dataset (a seeded random sample) "
             "(bpp per pixel position; per image = one file per image, headers included; amortised = one header "
             "for the whole set; decoder weights not counted).", ""]
    for block in payload["datasets"]:
        lines += [f"**{block['label']}** ({block['image_shape']})", "",
                  "| codec | setting | bpp per image | bpp amortised | PSNR | SSIM |", "|---|---|---:|---:|---:|---:|"]
        for row in block["rows"]:
            lines.append(f"| {row['codec']} | {row['setting']} | {row['bpp_per_image']:.3f} | {row['bpp_amortised']:.3f} "
                         f"| {'lossless' if row['psnr'] is None else format(row['psnr'], '.2f') + ' dB'} | {row['ssim']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="only this dataset (mnist, fashion-mnist, cifar10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=1000, help="rate–distortion on a seeded random N test images")
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the run directories here")
    parser.add_argument("--train-only", action="store_true", help="train the runs and stop")
    parser.add_argument("--table-only", action="store_true", help="rewrite fixed_codes.md from fixed_codes.json")
    args = parser.parse_args()
    if args.table_only:
        table = markdown(json.loads(RESULT.read_text(encoding="utf-8")))
        (RESULT.parent / "fixed_codes.md").write_text(table, encoding="utf-8")
        print(table)
        return
    torch.set_num_threads(args.threads)
    root = data_root()
    work = args.keep or Path(tempfile.mkdtemp(prefix="convae-codes-"))
    datasets = [d for d in DATASETS if not args.only or d == args.only]
    trained: dict[tuple[str, int], tuple[Path, dict[str, Any]]] = {}
    for dataset in datasets:
        for latent_dim in DATASETS[dataset]["latent_dims"]:
            print(f"== train {dataset} latent_dim={latent_dim}", flush=True)
            trained[dataset, latent_dim] = train_run(dataset, latent_dim, root, work, args.seed, args.threads)
            print(f"   {trained[dataset, latent_dim][1]}", flush=True)
    if args.train_only:
        return
    from convae.applications.codes import classic_codec_rows, rate_distortion, rate_figure, sample_images

    blocks = []
    for dataset in datasets:
        _, test = load_splits(dataset, data_dir=str(root))
        images = sample_images(test, args.images)  # seeded: the CIFAR-10 test folders are sorted by class
        rows: list[dict[str, Any]] = []
        runs = []
        for latent_dim in DATASETS[dataset]["latent_dims"]:
            run_dir, cost = trained[dataset, latent_dim]
            started = time.perf_counter()
            result = rate_distortion(run_dir, images, bits=BITS)
            what = "unpool 7×7×1 + switches" if latent_dim == "unpool" else f"latent_dim={latent_dim}"
            for row in result["rows"]:
                row["setting"] = f"{what}, {row['setting']}"
                row["label"] = f"convae {what}"
            rows += result["rows"]
            model, model_args = model_of(latent_dim)
            runs.append({"run": run_name(dataset, latent_dim), "model": model, "model_args": model_args, **TRAIN,
                         "train_images": 60000 if dataset != "cifar10" else 50000, **cost,
                         "code_shape": result["code_shape"], "float_psnr": result["float_psnr"],
                         "rate_seconds": round(time.perf_counter() - started, 1)})
            print(f"   {dataset} z={latent_dim}: float PSNR {result['float_psnr']:.2f} dB", flush=True)
        rows += classic_codec_rows(images)
        if not args.only:
            figure = rate_figure(rows, RESULT.parent / f"codes-{dataset}.png",
                                 f"{DATASETS[dataset]['label']}: rate–distortion on {len(images)} test images (seeded sample)")
            print(f"   wrote {figure}", flush=True)
        blocks.append({"dataset": dataset, "label": DATASETS[dataset]["label"],
                       "image_shape": "×".join(map(str, images.images.shape[1:])), "runs": runs, "rows": rows})
    payload = {
        "machine": machine(),
        "settings": {"images": args.images, "bits": list(BITS), "model": MODEL, "unpool_mnist": UNPOOL, "training": TRAIN,
                     "train_test_images": TRAIN_TEST_IMAGES, "seed": args.seed, "threads": args.threads,
                     "conventions": "bpp = bits / (H×W) pixel positions; per image = one file per image (headers, scales, "
                                    "hash repeated); amortised = one header for the set (convae: one .cvc of all codes; "
                                    "image codecs: the bytes all files share counted once); decoder weights not counted; "
                                    "PSNR from the mean MSE over images, SSIM mean over images; image codecs decode to "
                                    "uint8, convae output clamped to [0,1]"},
        "datasets": blocks,
    }
    table = markdown(payload)
    if not args.only:
        write_results("fixed_codes.json", payload)
        (RESULT.parent / "fixed_codes.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
