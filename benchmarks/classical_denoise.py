"""The classical denoisers, run inside the baselines' own virtual environment (never convae's).

Called by benchmarks/photo_denoise.py as ``VENV/bin/python classical_denoise.py JOBS.json``:
each job names a noisy PNG, its σ (0-255) and where each method's PNG goes. It writes the
seconds of each job beside its outputs in JOBS.json's ``"seconds"``.

- non-local means: ``skimage.restoration.denoise_nl_means`` with the true σ, h = 0.8·σ, 5×5
  patches, 13×13 search window (scikit-image's documented recipe);
- BM3D: ``bm3d.bm3d_rgb`` with the true σ (the authors' reference implementation on PyPI).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from PIL import Image


def nlm(noisy: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    s = sigma / 255
    return denoise_nl_means(noisy, h=0.8 * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True, channel_axis=-1)


def bm3d(noisy: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d as reference

    return reference.bm3d_rgb(noisy, sigma_psd=sigma / 255)


def main() -> None:
    path = sys.argv[1]
    jobs = json.load(open(path))
    for job in jobs:
        noisy = np.asarray(Image.open(job["noisy"])).astype(np.float64) / 255
        job["seconds"] = {}
        for method, run in (("nlm", nlm), ("bm3d", bm3d)):
            started = time.perf_counter()
            estimate = run(noisy, job["sigma"])
            job["seconds"][method] = time.perf_counter() - started
            Image.fromarray(np.clip(np.rint(estimate * 255), 0, 255).astype(np.uint8)).save(job[method])
        print(f"{job['noisy']}: " + ", ".join(f"{m} {s:.1f} s" for m, s in job["seconds"].items()), flush=True)
    json.dump(jobs, open(path, "w"), indent=1)


if __name__ == "__main__":
    main()
