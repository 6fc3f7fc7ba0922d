"""An inspection dataset in the MVTec AD layout, made from real pictures with synthetic defects.

Normal parts are crops of one texture or photo (random place, flip and quarter turn);
defective parts are the same with a scratch, a spot or a missing patch painted in, and a
pixel mask of exactly what was painted. benchmarks/inspection.py builds one per texture
from the pictures that ship inside scikit-image; the tests build tiny ones from noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw

DEFECTS = ("scratch", "spot", "missing")
#: Kinds the first sets lack, for sets that test defects no one tuned on: a translucent colour
#: stain with a soft edge, and a blurred region (detail lost, colour kept).
NEW_DEFECTS = ("stain", "blur")


def _crop(rng: np.random.Generator, picture: np.ndarray, size: int) -> np.ndarray:
    h, w = picture.shape[:2]
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    crop = picture[y:y + size, x:x + size]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(np.rot90(crop, int(rng.integers(0, 4))))


def paint_defect(rng: np.random.Generator, image: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(image with one ``kind`` defect, uint8 mask: 255 where painted)."""
    size = image.shape[0]
    mask_image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_image)
    mean = image.reshape(-1, image.shape[-1] if image.ndim == 3 else 1).mean(0)
    if kind == "scratch":
        length = rng.uniform(0.25, 0.45) * size
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        dy, dx = np.sin(angle) * length / 2, np.cos(angle) * length / 2
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=max(2, size // 64))
        colour = np.where(mean > 127, 20, 235)
    elif kind == "spot":
        radius = rng.uniform(0.04, 0.08) * size
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
        colour = np.clip(mean * np.array([1.4, 0.6, 0.5][: len(mean)]) + 40, 0, 255)
    elif kind == "missing":
        side = rng.uniform(0.1, 0.16, 2) * size
        y, x = rng.uniform(0.2, 0.8 - side / size, 2) * size
        draw.rectangle([x, y, x + side[1], y + side[0]], fill=255)
        colour = np.full_like(mean, 128.0)
    elif kind in NEW_DEFECTS:
        return _soft_defect(rng, image, kind, mask_image, draw)
    else:
        raise ValueError(f"unknown defect {kind!r}; choose one of {', '.join(DEFECTS + NEW_DEFECTS)}")
    mask = np.asarray(mask_image)
    out = image.astype(np.float32)
    where = mask > 0
    out[where] = colour
    return out.round().clip(0, 255).astype(np.uint8), mask


def _soft_defect(rng: np.random.Generator, image: np.ndarray, kind: str, mask_image: Image.Image,
                 draw: ImageDraw.ImageDraw) -> tuple[np.ndarray, np.ndarray]:
    """A stain (a tint blended in at 45–70 %) or a blur (Gaussian, radius 2–4 px) over an ellipse.

    The mask is the ellipse: nothing outside it changes. A stain changes every pixel inside;
    a blur leaves the flat ones as they were, which is what a real blurred region does too.
    """
    from PIL import ImageFilter

    size = image.shape[0]
    ry, rx = rng.uniform(0.07, 0.14, 2) * size
    cy, cx = rng.uniform(0.25, 0.75, 2) * size
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    mask = np.asarray(mask_image)
    where = mask > 0
    out = image.astype(np.float32)
    if kind == "stain":
        tint = np.array([150.0, 90.0, 40.0][: (image.shape[-1] if image.ndim == 3 else 1)])
        if image.ndim == 2:
            tint = np.float32(60.0 if image.mean() > 127 else 200.0)
        alpha = rng.uniform(0.45, 0.7)
        out[where] = (1 - alpha) * out[where] + alpha * tint
    else:
        blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(rng.uniform(2.0, 4.0))))
        out[where] = blurred[where]
    return out.round().clip(0, 255).astype(np.uint8), mask


def inspection_parts(picture: np.ndarray, *, size: int = 128, train: int = 60, test_good: int = 20,
                     test_defect: int = 10, seed: int = 0, defects: Sequence[str] = DEFECTS,
                     ) -> Iterator[tuple[str, str, int, np.ndarray, np.ndarray, np.ndarray | None]]:
    """Every part of a set in its draw order: (split, kind, index, clean crop, saved image, mask or None).

    One place draws them, so benchmarks/inspection_visibility.py measures how much each painted
    defect changed its part on exactly the parts write_inspection_dataset saves.
    """
    rng = np.random.default_rng(seed)
    picture = np.asarray(picture)
    if picture.ndim == 3 and picture.shape[2] == 4:
        picture = picture[..., :3]
    for split, count in (("train", train), ("test", test_good)):
        for i in range(count):
            crop = _crop(rng, picture, size)
            yield split, "good", i, crop, crop, None
    for kind in defects:
        for i in range(test_defect):
            clean = _crop(rng, picture, size)
            image, mask = paint_defect(rng, clean, kind)
            yield "test", kind, i, clean, image, mask


def write_inspection_dataset(root: str | Path, picture: np.ndarray, *, size: int = 128, train: int = 60,
                             test_good: int = 20, test_defect: int = 10, seed: int = 0,
                             defects: Sequence[str] = DEFECTS) -> Path:
    """Write train/good, test/good, test/<defect>/ and ground_truth/<defect>/<name>_mask.png under ``root``."""
    root = Path(root)

    def save(folder: Path, name: str, array: np.ndarray) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / f"{name}.png")

    for split, kind, i, _, image, mask in inspection_parts(picture, size=size, train=train, test_good=test_good,
                                                           test_defect=test_defect, seed=seed, defects=defects):
        save(root / split / kind, f"{i:03d}", image)
        if mask is not None:
            save(root / "ground_truth" / kind, f"{i:03d}_mask", mask)
    return root


def last_epoch_figures(run_dir: str | Path, keys: Sequence[str], score: str | None = None) -> dict | None:
    """detect --eval's ``keys`` for the run's *last* weights, when the run ended on a kept epoch.

    An inspect run whose held-out check fell more than a margin below its best epoch's ends on
    that epoch (convae.training.keep_best); state.pt still holds the last weights. Measured on a
    copy of the run, so a benchmark reports what keeping the epoch gained or cost against the last.
    """
    import shutil
    import tempfile

    from convae.applications.anomaly import evaluate_detection
    from convae.run.files import STATE, WEIGHTS, load_state, save_weights
    from convae.training.keep_best import ends_on_kept_epoch

    run_dir = Path(run_dir)
    best = ends_on_kept_epoch(run_dir)
    if best is None:
        return None
    state = load_state(run_dir / STATE)
    with tempfile.TemporaryDirectory(dir=run_dir.parent) as tmp:
        copy = Path(tmp) / run_dir.name
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("threshold.json", "detect-eval*.json"))
        save_weights(copy / WEIGHTS, state["model"])
        result = evaluate_detection(copy, score=score, figures=False, device="cpu")
    return {"epoch": int(state["epoch"]), "step": int(state["step"]), "kept_epoch": best[0],
            **{k: result[k] for k in keys},
            "auroc_per_anomalous_class": result["auroc_per_anomalous_class"]}
