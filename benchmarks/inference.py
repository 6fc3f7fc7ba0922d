"""Inference over a folder of 10,000 PNGs: images/s of detect, denoise and encode, and where the time goes.

Run: ``python benchmarks/inference.py`` (needs real MNIST via $CONVAE_DATA or ../shared/data).
The 10,000 MNIST test digits are written as PNG files; short ``conv-pool`` runs are trained
(speed does not depend on how well); then each verb runs as the user runs it, a fresh
process over the whole folder, timed from start to exit. The same work is then timed in
parts inside one process: start-up (importing the verb), finding and decoding the files,
the model on all images (batch 256), and writing the results (the rest of the command's
time). Writes benchmarks/results/inference.{json,md} with the commit.
"""

from __future__ import annotations

from convae.core.openmp import set_openmp_wait_policy

set_openmp_wait_policy()  # first, before torch, as in the `convae` command

# isort: split
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, commit, data_root, machine, write_results
from PIL import Image

from convae.data import load_splits
from convae.data.files import find_image_files, read_image
from convae.run import Run
from convae.training import TrainConfig, Trainer

COUNT = 10_000


def write_pngs(folder: Path, images: torch.Tensor) -> None:
    folder.mkdir(parents=True)
    for i, image in enumerate(images.numpy()):
        Image.fromarray(image[0]).save(folder / f"{i:05d}.png")


def train(root: Path, name: str, data_dir: str, **options: Any) -> Path:
    train_set, test_set = load_splits("mnist", data_dir=data_dir)
    config = TrainConfig(dataset="mnist", model="conv-pool", epochs=1, seed=0, device="cpu", data_dir=data_dir,
                         **options)
    Trainer(config, root / name, train_set=train_set.subset(range(6000)), test_set=test_set.subset(range(500)),
            progress=False).fit()
    return root / name


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "convae", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"convae {' '.join(args[:2])} failed: {done.stderr[-1500:]}")
    return time.perf_counter() - started


def parts(run: Path, folder: Path, env: dict[str, str]) -> dict[str, float]:
    """Start-up, decoding and the model, each timed on its own (the rest of a command is writing)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import convae.cli, convae.applications.anomaly, torch"], env=env,
                   check=True)
    startup = time.perf_counter() - started
    started = time.perf_counter()
    files = find_image_files([folder])
    images = torch.stack([read_image(f.path) for f in files])
    decode = time.perf_counter() - started
    model = Run.open(run).model()
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(images), 256):
            model(images[i:i + 256].float().div_(255))
    forward = time.perf_counter() - started
    return {"start-up (imports)": startup, "find + decode PNGs": decode, "model forward (batch 256)": forward}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    data_dir = str(data_root())
    env = {**os.environ, "CONVAE_DATA": data_dir}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, test = load_splits("mnist", data_dir=data_dir)
        folder = root / "pngs"
        write_pngs(folder, test.images[:COUNT])
        detector = train(root, "detector", data_dir, normal_classes=[0, 1, 2, 3, 4], val_fraction=0.1)
        denoiser = train(root, "denoiser", data_dir, task="denoise")
        subprocess.run([sys.executable, "-m", "convae", "detect", str(detector), "--fit"], env=env, check=True,
                       capture_output=True)
        commands = {
            "detect": ["detect", str(detector), str(folder), "--csv", str(root / "scores.csv"), "--device", "cpu"],
            "denoise": ["denoise", str(denoiser), str(folder), "--out", str(root / "denoised"), "--device", "cpu"],
            "encode": ["encode", str(detector), str(folder), "--out", str(root / "codes.cvc"), "--device", "cpu"],
        }
        rows = []
        split = parts(detector, folder, env)
        for verb, args in commands.items():
            seconds = min(timed(args, env) for _ in range(2))
            rest = seconds - sum(split.values())
            rows.append({"verb": verb, "images": COUNT, "seconds": round(seconds, 2),
                         "images_per_s": round(COUNT / seconds), **{k: round(v, 2) for k, v in split.items()},
                         "writing and the rest": round(rest, 2)})
            print(rows[-1], flush=True)
    result = {"benchmark": "inference", "commit": commit(), "model": "conv-pool (MNIST)", "threads":
              torch.get_num_threads(), "rows": rows, "machine": machine()}
    print(f"wrote {write_results('inference.json', result)}")
    keys = ["start-up (imports)", "find + decode PNGs", "model forward (batch 256)", "writing and the rest"]
    lines = [f"# Inference over {COUNT:,} PNGs (MNIST test digits, conv-pool), commit {result['commit']}", "",
             "Whole command, best of 2 fresh processes; the parts are timed separately in one process.", "",
             "| verb | seconds | images/s | " + " | ".join(keys) + " |", "|---|---:|---:|" + "---:|" * len(keys)]
    for row in rows:
        lines.append(f"| {row['verb']} | {row['seconds']:.1f} | {row['images_per_s']:,} | "
                     + " | ".join(f"{row[k]:.1f} s" for k in keys) + " |")
    (RESULTS / "inference.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
