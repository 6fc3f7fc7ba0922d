"""Photo denoising at full resolution: convae's patch-trained denoiser against NLM and BM3D.

Photographs that ship inside well-kept packages: scikit-learn's ``load_sample_images``
(china, flower) and scikit-image's bundled data (astronaut, coffee, chelsea, rocket,
immunohistochemistry, hubble_deep_field). convae trains on patches of the *train* photos
and is tested on the others, which it never saw:

    train: china, astronaut, rocket, immunohistochemistry, hubble_deep_field
    test:  flower, coffee, chelsea

For each σ in 15, 25, 50 (on the 0-255 scale), one denoiser is trained
(``TrainConfig(task="denoise", noise="gaussian:σ/255", patch=P)``: fresh noise on every
patch of every step; the training log's test loss is on fixed patches of the test photos and
chooses nothing). The model is the ``conv`` preset with one level and a spatial code of 48
channels at half the resolution (4× as many values as the input: a denoiser needs no
bottleneck). It was chosen on a *validation* photo (immunohistochemistry, held out of
training, σ 25, training on the other four train photos), never on the test photos: at 15
epochs two levels with 32 code channels gave 23.3 dB, this one 25.4 dB, a wider one
(width 32, 2 blocks, 64 code channels) 26.4 dB but 4.5× slower; at an equal time budget
this one (60 epochs, 154 s) reached 27.5 dB against the wider one's 26.4 dB (15 epochs,
168 s). The noisy photo was 20.4 dB. A first full run with the two-level model lost to the
noisy input at σ 15 (22.6 dB against 25.3 on flower) and was stopped. Every test photo gets one fixed noisy copy (seeded Gaussian noise,
rounded and clipped to 0-255 like a saved photo); every method denoises exactly that copy:

- convae: ``restore_files`` (what ``convae denoise RUN photo.png`` runs): the whole photo in
  overlapping tiles, blended, at its own size.
- non-local means: ``skimage.restoration.denoise_nl_means`` with the true σ, h = 0.8·σ,
  5×5 patches, 13×13 search window (scikit-image's documented recipe).
- BM3D: ``bm3d.bm3d_rgb`` with the true σ (the reference implementation on PyPI), when it
  is installed.

PSNR and SSIM (``skimage.metrics``, data range 255, SSIM over the colour channels) are
computed at full resolution against the clean photo.

Run: ``python benchmarks/photo_denoise.py`` (about 15 minutes on 2 cores). Results:
benchmarks/results/photo_denoise.json and photo_denoise.md (the README table).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit, machine, write_results

TRAIN = ("china", "astronaut", "rocket", "immunohistochemistry", "hubble_deep_field")
TEST = ("flower", "coffee", "chelsea")
SIGMAS = (15, 25, 50)


def photo(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    from skimage import data

    return getattr(data, name)()


def noisy_copy(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(clean.astype(np.float64) + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)


def scores(estimate: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    return {"psnr": float(peak_signal_noise_ratio(clean, estimate, data_range=255)),
            "ssim": float(structural_similarity(clean, estimate, data_range=255, channel_axis=-1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigmas", default=",".join(map(str, SIGMAS)))
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--model-args", default="levels=1,code_channels=48,spatial_from=0,width=16",
                        help="conv preset settings: a denoiser keeps (almost) every value, so no bottleneck")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-bm3d", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from PIL import Image
    from skimage.restoration import denoise_nl_means

    from convae.applications.restore import restore_files
    from convae.models import parse_model_args
    from convae.training import TrainConfig, Trainer

    try:
        if args.no_bm3d:
            raise ImportError
        import bm3d
    except ImportError:
        bm3d = None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        train_dir = Path(tmp) / "photos"  # photos/train/*.png, photos/test/*.png: every train photo trains
        for split, names in (("train", TRAIN), ("test", TEST)):
            (train_dir / split).mkdir(parents=True)
            for name in names:
                Image.fromarray(photo(name)).save(train_dir / split / f"{name}.png")
        for sigma in map(int, args.sigmas.split(",")):
            run = Path(tmp) / f"run-{sigma}"
            cfg = TrainConfig(dataset=f"folder:{train_dir}", task="denoise", noise=f"gaussian:{sigma / 255:.6f}",
                              patch=args.patch, epochs=args.epochs, lr_schedule="cosine", val_fraction=0.0,
                              model_args=parse_model_args("conv", args.model_args.split(",")),
                              threads=args.threads, logger="none")
            started = time.perf_counter()
            Trainer(cfg, run, progress=False).fit()
            trained = time.perf_counter() - started
            for index, name in enumerate(TEST):
                clean = photo(name)
                noisy = noisy_copy(clean, sigma, seed=1000 * sigma + index)
                noisy_path = Path(tmp) / f"noisy-{sigma}-{name}.png"
                Image.fromarray(noisy).save(noisy_path)
                row = {"sigma": sigma, "photo": name, "size": list(clean.shape[:2]), "noisy": scores(noisy, clean)}
                started = time.perf_counter()
                out = restore_files(run, [noisy_path], Path(tmp) / f"out-{sigma}", task="denoise", device="cpu")
                row["convae"] = {**scores(np.asarray(Image.open(out[0]["output"])), clean),
                                 "seconds": round(time.perf_counter() - started, 2), "note": out[0]["note"]}
                started = time.perf_counter()
                nlm = denoise_nl_means(noisy.astype(np.float64) / 255, h=0.8 * sigma / 255, sigma=sigma / 255,
                                       patch_size=5, patch_distance=6, fast_mode=True, channel_axis=-1)
                row["nlm"] = {**scores(np.clip(np.rint(nlm * 255), 0, 255).astype(np.uint8), clean),
                              "seconds": round(time.perf_counter() - started, 2)}
                if bm3d is not None:
                    started = time.perf_counter()
                    estimate = bm3d.bm3d_rgb(noisy.astype(np.float64) / 255, sigma_psd=sigma / 255)
                    row["bm3d"] = {**scores(np.clip(np.rint(estimate * 255), 0, 255).astype(np.uint8), clean),
                                   "seconds": round(time.perf_counter() - started, 2)}
                row["convae_train_seconds"] = round(trained, 1)
                rows.append(row)
                line = "  ".join(f"{m} {row[m]['psnr']:.2f} dB/{row[m]['ssim']:.3f}"
                                 for m in ("noisy", "convae", "nlm", "bm3d") if m in row)
                print(f"σ {sigma} {name}: {line}", flush=True)
    methods = [m for m in ("noisy", "convae", "nlm", "bm3d") if m in rows[0]]
    means = {str(s): {m: {k: float(np.mean([r[m][k] for r in rows if r["sigma"] == s])) for k in ("psnr", "ssim")}
                      for m in methods} for s in sorted({r["sigma"] for r in rows})}
    payload = {"benchmark": "photo_denoise", "commit": commit(), "machine": machine(),
               "settings": {**vars(args), "train": TRAIN, "test": TEST}, "rows": rows, "mean_per_sigma": means}
    path = write_results("photo_denoise.json", payload)
    head = " | ".join(f"{m} PSNR / SSIM" for m in methods)
    lines = [f"| σ (0-255) | {head} |", "|---|" + "---|" * len(methods)]
    for s, by in means.items():
        lines.append(f"| {s} | " + " | ".join(f"{by[m]['psnr']:.2f} dB / {by[m]['ssim']:.3f}" for m in methods) + " |")
    (path.parent / "photo_denoise.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
