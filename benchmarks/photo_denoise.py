"""Photo denoising at full resolution, side by side in one run: convae against NLM and BM3D.

Photos (benchmarks/photos.py) ship inside scikit-image and scikit-learn. The methods train on
``TRAIN_COLOUR`` + ``TRAIN_GRAY``; the test photos (flower, coffee, chelsea) are only measured.
Every test photo gets one fixed noisy copy per σ (15, 25, 50 of 255: seeded Gaussian noise,
rounded and clipped like a saved photo), and every method denoises exactly that copy:

- noisy: the input itself;
- nlm, bm3d: benchmarks/classical_denoise.py, inside benchmarks/.venv-baselines (made here
  with scikit-image and bm3d when missing; ``$CONVAE_BASELINE_VENV`` points at another), with
  the true σ;
- recipe: the photo recipe a user runs, from scratch, with nothing but its documented flags:
  ``convae train --dataset folder:PHOTOS --task denoise --noise gaussian:0.0-0.2 --patch 64
  --max-time 15m`` (the preset, loss, rate, schedule and batch are the defaults);
- zoo: ``zoo:photo-denoise``, the bundled model (benchmarks/zoo/train_photo_denoise.py);
- old conv: the ``conv`` preset this project used before (one level, 48 code channels at half
  resolution), blind, for ``--old-minutes`` (5 by default: it is the reference, not a contender).

convae's methods run through ``restore_files``, what ``convae denoise RUN photo.png`` runs.
Scores: PSNR and SSIM (skimage.metrics, data range 255) and the colour cast (largest mean
error of one channel, 0-255), at full resolution; seconds per megapixel of denoising.

Colorization on the same test photos (``--task colorize``, default preset, ``--colorize-minutes``)
is scored by PSNR against the colour photo and by colourfulness (Hasler and Süsstrunk 2003),
beside the project's gray-to-chroma baseline (gray plus the mean colour of each gray level,
fitted on the training photos) and the gray input.

Run: ``python benchmarks/photo_denoise.py`` (about 40 minutes on 2 cores). Results:
benchmarks/results/photo_denoise.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, commit, machine, write_results
from photos import (
    TEST,
    TRAIN_COLOUR,
    TRAIN_GRAY,
    VALIDATION,
    convae_restore,
    noisy_copy,
    photo,
    scores,
    training_folder,
)

SIGMAS = (15, 25, 50)
BASELINE_VENV = Path(os.environ.get("CONVAE_BASELINE_VENV", REPO / "benchmarks" / ".venv-baselines"))
BASELINE_PACKAGES = ("scikit-image", "bm3d", "pillow")
METHODS = ("noisy", "nlm", "bm3d", "recipe", "zoo", "old conv")


def train(run: Path, minutes: float, **settings: Any) -> float:
    from convae.training import TrainConfig, Trainer

    started = time.perf_counter()
    Trainer(TrainConfig(max_time=minutes * 60, logger="none", **settings), run, progress=False).fit()
    return time.perf_counter() - started


def classical(jobs: list[dict[str, Any]], work: Path) -> list[dict[str, Any]]:
    python = BASELINE_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BASELINE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *BASELINE_PACKAGES], check=True)
    listing = work / "classical-jobs.json"
    listing.write_text(json.dumps(jobs))
    subprocess.run([str(python), str(REPO / "benchmarks" / "classical_denoise.py"), str(listing)], check=True)
    return json.loads(listing.read_text())


def convae_denoise(run: str | Path, noisy: Path, out: Path) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    estimate = convae_restore(run, noisy, out)
    return estimate, time.perf_counter() - started


def colourfulness(image: np.ndarray) -> float:
    """Hasler and Süsstrunk's colourfulness ("Measuring colourfulness in natural images", 2003)."""
    r, g, b = (image[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def colorize_rows(data: Path, work: Path, minutes: float, threads: int, tests: list[str]) -> dict[str, Any]:
    """--task colorize with the default preset against gray-to-chroma and the gray input."""
    from PIL import Image

    from convae.applications.restore.baselines import ColourTable

    run = work / "colorize"
    seconds = train(run, minutes, dataset=f"folder:{data}", task="colorize", patch=64, threads=threads)
    train_pixels = torch.cat([torch.from_numpy(photo(n)).permute(2, 0, 1).reshape(3, -1) for n in TRAIN_COLOUR], 1)
    table = ColourTable().fit(train_pixels.T.reshape(-1, 3, 1, 1).float().div(255))
    rows = []
    for name in tests:
        clean = photo(name)
        gray_path = work / f"gray-{name}.png"
        Image.fromarray(clean).convert("L").save(gray_path)
        gray = np.asarray(Image.open(gray_path).convert("RGB"))
        ours = convae_restore(run, gray_path, work / "colorized", task="colorize")
        luma = torch.from_numpy(np.asarray(Image.open(gray_path))).float().div(255)[None, None]
        base = (table(luma)[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        rows.append({"photo": name, **{m: {**scores(e, clean), "colourfulness": colourfulness(e)}
                                       for m, e in (("gray", gray), ("chroma baseline", base), ("convae", ours))},
                     "truth_colourfulness": colourfulness(clean)})
    return {"train_seconds": round(seconds, 1), "minutes": minutes, "rows": rows}


def big_photo() -> dict[str, Any]:
    """benchmarks/big_photo.py with the zoo model: a 4000×3000 photo's peak memory and time."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "big_photo.py"), "--run", "zoo:photo-denoise"],
                          check=True, capture_output=True, text=True)
    print(done.stdout.strip(), flush=True)
    return json.loads((REPO / "benchmarks" / "results" / "big_photo.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe-minutes", type=float, default=15.0)
    parser.add_argument("--old-minutes", type=float, default=5.0)
    parser.add_argument("--colorize-minutes", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sigmas", default=",".join(map(str, SIGMAS)), help="a smoke run takes fewer")
    parser.add_argument("--photos", default=",".join(TEST), help="a smoke run takes fewer (of the test photos)")
    parser.add_argument("--no-big-photo", action="store_true", help="leave out the 4000×3000 measurement")
    args = parser.parse_args()
    sigmas = [int(s) for s in args.sigmas.split(",")]
    tests = [p for p in args.photos.split(",") if p in TEST]
    torch.set_num_threads(args.threads)
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = training_folder(work / "photos")
        runs = {"zoo": "zoo:photo-denoise", "recipe": work / "recipe", "old conv": work / "old-conv"}
        train_seconds = {
            "recipe": train(runs["recipe"], args.recipe_minutes, dataset=f"folder:{data}", task="denoise",
                            noise="gaussian:0.0-0.2", patch=64, threads=args.threads),
            "old conv": train(runs["old conv"], args.old_minutes, dataset=f"folder:{data}", task="denoise",
                              noise="gaussian:0.0-0.2", patch=48, model="conv", epochs=1000, lr_schedule="none",
                              model_args={"levels": 1, "code_channels": 48, "spatial_from": 0, "width": 16},
                              threads=args.threads)}
        print(f"trained: {train_seconds}", flush=True)
        rows, jobs = [], []
        for sigma in sigmas:
            for index, name in enumerate(tests):
                clean = photo(name)
                noisy = noisy_copy(clean, sigma, seed=1000 * sigma + index)
                path = work / f"noisy-{sigma}-{name}.png"
                Image.fromarray(noisy).save(path)
                megapixels = clean.shape[0] * clean.shape[1] / 1e6
                row = {"sigma": sigma, "photo": name, "size": list(clean.shape[:2]), "noisy": scores(noisy, clean)}
                for method, run in runs.items():
                    estimate, seconds = convae_denoise(run, path, work / f"out-{method}-{sigma}".replace(" ", "-"))
                    row[method] = {**scores(estimate, clean), "s_per_mp": seconds / megapixels}
                rows.append(row)
                jobs.append({"noisy": str(path), "sigma": sigma, "nlm": str(work / f"nlm-{sigma}-{name}.png"),
                             "bm3d": str(work / f"bm3d-{sigma}-{name}.png"), "megapixels": megapixels})
        for row, job in zip(rows, classical(jobs, work)):
            clean = photo(row["photo"])
            for method in ("nlm", "bm3d"):
                row[method] = {**scores(np.asarray(Image.open(job[method])), clean),
                               "s_per_mp": job["seconds"][method] / job["megapixels"]}
        for row in rows:
            print(f"σ {row['sigma']} {row['photo']}: " + "  ".join(f"{m} {row[m]['psnr']:.2f}" for m in METHODS),
                  flush=True)
        colorize = colorize_rows(data, work, args.colorize_minutes, args.threads, tests)
    means = {str(s): {m: {k: float(np.mean([r[m][k] for r in rows if r["sigma"] == s])) for k in r0_keys(rows, m)}
                      for m in METHODS} for s in sigmas}
    payload = {"benchmark": "photo_denoise", "commit": commit(), "machine": machine(),
               "settings": {**vars(args), "train": TRAIN_COLOUR + TRAIN_GRAY, "validation": VALIDATION,
                            "test": tests, "baseline_venv": str(BASELINE_VENV)},
               "train_seconds": train_seconds, "rows": rows, "mean_per_sigma": means, "colorize": colorize,
               "big_photo": None if args.no_big_photo else big_photo()}
    path = write_results("photo_denoise.json", payload)
    (path.parent / "photo_denoise.md").write_text(markdown(payload), encoding="utf-8")
    print(markdown(payload))
    print(f"wrote {path}")


def r0_keys(rows: list[dict[str, Any]], method: str) -> list[str]:
    return [k for k in ("psnr", "ssim", "cast", "s_per_mp") if k in rows[0][method]]


def targets(payload: dict[str, Any]) -> list[str]:
    """The issue's targets, each with its measured figure and whether it is met."""
    means, rows, lines = payload["mean_per_sigma"], payload["rows"], []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    if "25" in means:
        gain = means["25"]["recipe"]["psnr"] - means["25"]["nlm"]["psnr"]
        lines.append(f"σ 25: the 15-minute recipe beats NLM by ≥ 0.5 dB: {gain:+.2f} dB, {verdict(gain >= 0.5)}")
    for sigma in means:
        gain = means[sigma]["zoo"]["psnr"] - means[sigma]["bm3d"]["psnr"]
        need = 0.3 if sigma == "25" else 0.0
        lines.append(f"σ {sigma}: zoo:photo-denoise beats BM3D{' by ≥ 0.3 dB' if need else ''}: {gain:+.2f} dB, "
                     f"{verdict(gain >= need if need else gain > 0)}")
    for method in ("recipe", "zoo"):
        worst = max(rows, key=lambda r: r[method]["cast"])
        lines.append(f"no colour cast ({method}): largest mean channel error {worst[method]['cast']:.1f}/255 "
                     f"({worst['photo']}, σ {worst['sigma']}), {verdict(worst[method]['cast'] <= 2.0)}")
    big = payload["big_photo"]
    if big:
        lines.append(f"4000×3000 photo through the zoo model under 2 GB: peak RSS {big['peak_rss_mib']} MiB, "
                     f"{verdict(big['peak_rss_mib'] < big['target_mib'])}")
    return lines


def markdown(payload: dict[str, Any]) -> str:
    means = payload["mean_per_sigma"]
    lines = [f"Commit {payload['commit']}; mean over {', '.join(payload['settings']['test'])} "
             "(PSNR / SSIM / largest channel cast in 0-255 levels / seconds per megapixel).", "",
             "| σ (0-255) | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for sigma, by in means.items():
        cells = [f"{by[m]['psnr']:.2f} dB / {by[m]['ssim']:.3f} / {by[m]['cast']:.1f}"
                 + (f" / {by[m]['s_per_mp']:.1f} s" if "s_per_mp" in by[m] else "") for m in METHODS]
        lines.append(f"| {sigma} | " + " | ".join(cells) + " |")
    lines += ["", "Per photo, PSNR (dB) / largest channel cast (0-255 levels):", "",
              "| σ | photo | " + " | ".join(METHODS) + " |", "|---|---|" + "---|" * len(METHODS)]
    for r in payload["rows"]:
        lines.append(f"| {r['sigma']} | {r['photo']} | "
                     + " | ".join(f"{r[m]['psnr']:.2f} / {r[m]['cast']:.1f}" for m in METHODS) + " |")
    lines += ["", "Targets (computed from the rows above):", ""] + [f"- {line}" for line in targets(payload)]
    big, colour = payload["big_photo"], payload["colorize"]
    seconds = ", ".join(f"{name} {value:.0f} s" for name, value in payload["train_seconds"].items())
    lines += ["", f"Training wall time: {seconds}.", "",
              f"4000×3000 photo through zoo:photo-denoise: peak RSS {big['peak_rss_mib']} MiB, {big['seconds']} s."
              if big else "4000×3000 photo: not measured in this run.", "",
              f"Colorization ({colour['minutes']:g} min of `--task colorize`), PSNR / colourfulness "
              "(truth in the last column):", "",
              "| photo | gray | chroma baseline | convae | truth |", "|---|---|---|---|---|"]
    for r in colour["rows"]:
        lines.append(f"| {r['photo']} | " + " | ".join(f"{r[m]['psnr']:.2f} dB / {r[m]['colourfulness']:.1f}"
                                                   for m in ("gray", "chroma baseline", "convae"))
                     + f" | {r['truth_colourfulness']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
