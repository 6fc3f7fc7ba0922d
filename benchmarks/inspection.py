"""Inspection benchmark: MVTec-layout datasets from real pictures, convae against PCA on patches.

Each category is a folder in the MVTec AD layout (convae.bench.inspection) made from a
picture that ships inside scikit-image: three textures (brick, grass, gravel: random
128×128 crops, flips and quarter turns) and one object (the ``coffee`` photo, resized,
so every part is the same cup shifted by a few pixels). The test defects are painted
scratches, spots and missing patches, with masks of exactly the painted pixels.

convae: ``convae train --dataset mvtec:DIR --patch P`` (trains on train/good only), then
``convae detect RUN --eval``: image AUROC, pixel AUROC and AUPRO, through the CLI's own
functions. The baseline in the same run: PCA fitted on P×P patches of the same
train/good images (the components explaining ``PCA_VARIANCE`` of the variance); a
pixel's error is the mean squared PCA reconstruction error of the patches covering it
(stride P/4), and an image's score is the peak of its smoothed map, exactly as convae
scores a patch run (convae.applications.anomaly.scores.peak_score).

The settings (patch, epochs, score kind) were fixed before the first run on the test
split; nothing here was tuned on it.

Run: ``python benchmarks/inspection.py`` (about 5 minutes on 2 cores). Results:
benchmarks/results/inspection.json and inspection.md (the README table).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit, machine, write_results

PCA_VARIANCE = 0.95
CATEGORIES = ("brick", "grass", "gravel", "coffee")


def picture(name: str, size: int) -> np.ndarray:
    from PIL import Image
    from skimage import data

    array = getattr(data, name)()
    if name == "coffee":  # an object: the whole photo, a few pixels of jitter per part
        return np.asarray(Image.fromarray(array).resize((size + 8, size + 8), Image.BICUBIC))
    return array


def pca_maps(train: torch.Tensor, test: torch.Tensor, patch: int) -> torch.Tensor:
    """Per-pixel PCA reconstruction error of the patches (stride patch/4) covering each pixel."""
    from sklearn.decomposition import PCA

    stride = max(patch // 4, 1)

    def patches(images: torch.Tensor) -> torch.Tensor:
        x = images.float().div(255)
        return F.unfold(x, patch, stride=stride).transpose(1, 2)  # N × L × (C·P·P)

    fitted = PCA(n_components=PCA_VARIANCE, svd_solver="full", random_state=0)
    fitted.fit(patches(train).reshape(-1, train.shape[1] * patch * patch).numpy())
    maps = []
    for image in test:
        p = patches(image[None])[0].numpy()
        error = (fitted.inverse_transform(fitted.transform(p)) - p) ** 2  # L × (C·P·P)
        h, w = image.shape[-2:]
        summed = F.fold(torch.from_numpy(error.T[None]).float(), (h, w), patch, stride=stride)
        count = F.fold(torch.ones(1, error.shape[1], error.shape[0]), (h, w), patch, stride=stride)
        maps.append((summed / count.clamp(min=1)).mean(1)[0])
    return torch.stack(maps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--categories", default=",".join(CATEGORIES))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--score", default="mse")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from convae.applications.anomaly import evaluate_detection
    from convae.applications.anomaly.evaluate import detection_metrics, segmentation_metrics
    from convae.applications.anomaly.scores import peak_score
    from convae.bench.inspection import write_inspection_dataset
    from convae.data import load_dataset
    from convae.training import TrainConfig, Trainer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for category in args.categories.split(","):
            root = write_inspection_dataset(Path(tmp) / category, picture(category, args.size), size=args.size,
                                            train=80, test_good=20, test_defect=10, seed=0)
            started = time.perf_counter()
            cfg = TrainConfig(dataset=f"mvtec:{root}", patch=args.patch, epochs=args.epochs, lr_schedule="cosine",
                              threads=args.threads, logger="none")
            Trainer(cfg, Path(tmp) / f"run-{category}", progress=False).fit()
            trained = time.perf_counter() - started
            ours = evaluate_detection(Path(tmp) / f"run-{category}", score=args.score, figures=False)
            scored = time.perf_counter() - started - trained

            train, test = load_dataset(f"mvtec:{root}", "train"), load_dataset(f"mvtec:{root}", "test")
            started = time.perf_counter()
            maps = pca_maps(train.images, test.images, args.patch)
            scores = np.array([peak_score(m) for m in maps])
            labels = (test.labels != 0).numpy().astype(np.int64)
            pca = {**detection_metrics(scores, labels),
                   **segmentation_metrics(maps, test.masks, test.labels.numpy(), [0], list(test.classes))}
            pca_seconds = time.perf_counter() - started
            row = {
                "category": category,
                "convae": {key: ours[key] for key in ("auroc", "pixel_auroc", "aupro", "auroc_per_anomalous_class",
                                                        "pixel_auroc_per_anomalous_class",
                                                        "aupro_per_anomalous_class")},
                "convae_seconds": {"train": round(trained, 1), "evaluate": round(scored, 1)},
                "pca": {key: pca[key] for key in ("auroc", "pixel_auroc", "aupro", "aupro_per_anomalous_class")},
                "pca_seconds": round(pca_seconds, 1),
                "images": {"train_good": len(train), "test": len(test), "test_defective": int(labels.sum())},
            }
            rows.append(row)
            print(f"{category}: convae image {row['convae']['auroc']:.3f} pixel {row['convae']['pixel_auroc']:.3f} "
                  f"AUPRO {row['convae']['aupro']:.3f} | PCA image {pca['auroc']:.3f} pixel "
                  f"{pca['pixel_auroc']:.3f} AUPRO {pca['aupro']:.3f}", flush=True)
    mean = {side: {key: float(np.mean([r[side][key] for r in rows])) for key in ("auroc", "pixel_auroc", "aupro")}
            for side in ("convae", "pca")}
    payload = {"benchmark": "inspection", "commit": commit(), "machine": machine(),
               "settings": {**vars(args), "pca_variance": PCA_VARIANCE, "train_good": 80, "test_good": 20,
                            "test_defective_per_type": 10, "defects": ["scratch", "spot", "missing"]},
               "categories": rows, "mean": mean}
    path = write_results("inspection.json", payload)
    lines = ["| category | convae image AUROC | PCA image AUROC | convae pixel AUROC | PCA pixel AUROC | "
             "convae AUPRO | PCA AUPRO |", "|---|---|---|---|---|---|---|"]
    for r in rows + [{"category": "**mean**", **mean}]:
        c, p = r["convae"], r["pca"]
        lines.append(f"| {r['category']} | {c['auroc']:.3f} | {p['auroc']:.3f} | {c['pixel_auroc']:.3f} | "
                     f"{p['pixel_auroc']:.3f} | {c['aupro']:.3f} | {p['aupro']:.3f} |")
    (path.parent / "inspection.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
