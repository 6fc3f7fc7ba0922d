"""The photographs the photo benchmarks and the zoo models use, and how they are made noisy and scored.

They ship inside well-kept packages, so nothing is downloaded: scikit-learn's
``load_sample_images`` (china, flower) and scikit-image's bundled data. Which photo plays
which part is fixed here, once:

- ``TRAIN_COLOUR`` and ``TRAIN_GRAY`` train (the gray ones as RGB: texture, no colour);
- ``VALIDATION`` (immunohistochemistry) chooses settings and is never trained on;
- ``TEST`` (flower, coffee, chelsea) is only ever measured. scikit-image's ``cat`` is the same
  picture as ``chelsea``, so it is in no list.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

TRAIN_COLOUR = ("china", "astronaut", "rocket", "hubble_deep_field", "retina")
TRAIN_GRAY = ("camera", "moon", "brick", "grass", "gravel", "coins", "clock", "text")
VALIDATION = "immunohistochemistry"
TEST = ("flower", "coffee", "chelsea")
#: Every order of the three colour channels (the zoo model trains on each colour photo in all six).
CHANNEL_ORDERS = tuple(itertools.permutations(range(3)))


def photo(name: str) -> np.ndarray:
    """The photo as uint8 H×W×3 (a gray one replicated to three channels)."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        image = load_sample_image(f"{name}.jpg")
    else:
        from skimage import data

        image = getattr(data, name)()
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def noisy_copy(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Seeded Gaussian noise of σ (0-255 scale), rounded and clipped like a saved photo."""
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(clean.astype(np.float64) + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)


def scores(estimate: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM at full resolution (data range 255, SSIM over the colour channels), and the colour
    cast: the largest mean error of one channel, in 0-255 levels."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    cast = np.abs((estimate.astype(np.float64) - clean).reshape(-1, clean.shape[-1]).mean(0)).max()
    return {"psnr": float(peak_signal_noise_ratio(clean, estimate, data_range=255)),
            "ssim": float(structural_similarity(clean, estimate, data_range=255, channel_axis=-1)),
            "cast": float(cast)}


def reordered(image: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(image[..., list(order)])


def training_folder(root: Path, colour_orders: tuple[tuple[int, ...], ...] = ((0, 1, 2),)) -> Path:
    """ROOT/train/photo/*.png (each colour photo in each of ``colour_orders``, the gray ones once) and
    ROOT/test/photo/VALIDATION.png, as a folder: dataset."""
    from PIL import Image

    folder = root / "train" / "photo"
    folder.mkdir(parents=True, exist_ok=True)
    for name in TRAIN_COLOUR:
        for order in colour_orders:
            suffix = "" if order == (0, 1, 2) and len(colour_orders) == 1 else "-" + "".join(map(str, order))
            Image.fromarray(reordered(photo(name), order)).save(folder / f"{name}{suffix}.png")
    for name in TRAIN_GRAY:
        Image.fromarray(photo(name)).save(folder / f"{name}.png")
    (root / "test" / "photo").mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(VALIDATION)).save(root / "test" / "photo" / f"{VALIDATION}.png")
    return root


def convae_restore(run: str | Path, image: Path, out: Path, task: str = "denoise") -> np.ndarray:
    """One file through what ``convae denoise|colorize RUN FILE`` runs, back as uint8 H×W×3."""
    from PIL import Image

    from convae.applications.restore import restore_files

    [entry] = restore_files(run, [image], out, task=task, device="cpu")
    if not entry["ok"]:
        raise SystemExit(f"{run}: {entry['error']}")
    return np.asarray(Image.open(entry["output"]).convert("RGB"))
