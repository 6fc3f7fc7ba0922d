"""Peak memory of ``convae denoise RUN photo.jpg`` on a 4000×3000 photo (target: under 2 GB RSS).

A patch denoiser (``--patch 64``, one short epoch on scikit-learn's two sample photos, trained
in this process) and a 4000×3000 JPEG (scikit-learn's ``china.jpg`` scaled up) are made in a
temporary folder (or ``--run RUN``, for example ``--run zoo:photo-denoise``, is used as it is);
then the real command runs as the only child process and its peak resident
memory is read from ``getrusage(RUSAGE_CHILDREN)``. The output must have exactly the photo's size.

Run: ``python benchmarks/big_photo.py`` (about a minute on 2 cores). Results:
benchmarks/results/big_photo.json.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit, machine, write_results

WIDTH, HEIGHT, PATCH = 4000, 3000, 64


def main() -> None:
    import argparse

    from PIL import Image
    from sklearn.datasets import load_sample_images

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a run directory or zoo:NAME to denoise with (default: train a small one here)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for i, image in enumerate(load_sample_images().images):
            Image.fromarray(image).save(photos / f"sample{i}.png")
        run = args.run or str(Path(tmp) / "run")
        if args.run is None:
            from convae.training import TrainConfig, Trainer  # in this process: the only child is the denoise

            Trainer(TrainConfig(dataset=f"folder:{photos}", patch=PATCH, task="denoise", noise="gaussian:0.1",
                                model="conv", epochs=1, logger="none"), Path(run), progress=False).fit()
        convae = [sys.executable, "-m", "convae"]
        big = Path(tmp) / "photo.jpg"
        Image.open(photos / "sample0.png").resize((WIDTH, HEIGHT), Image.BICUBIC).save(big, quality=92)
        started = time.perf_counter()
        done = subprocess.run([*convae, "denoise", run, str(big), "--out", str(Path(tmp) / "out")],
                              check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        size = Image.open(Path(tmp) / "out" / "photo.png").size
    payload = {"benchmark": "big_photo", "commit": commit(), "machine": machine(), "run": args.run or "conv, 1 epoch",
               "photo": [HEIGHT, WIDTH], "patch": PATCH, "output_size_hw": [size[1], size[0]],
               "peak_rss_mib": round(peak_kib / 1024), "seconds": round(seconds, 1),
               "output": done.stdout.strip(), "target_mib": 2048}
    path = write_results("big_photo.json", payload)
    print(f"denoise of a {WIDTH}×{HEIGHT} photo: peak RSS {payload['peak_rss_mib']} MiB in {seconds:.1f} s, "
          f"output {size[0]}×{size[1]}; wrote {path}")


if __name__ == "__main__":
    main()
