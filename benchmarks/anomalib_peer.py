"""anomalib's DRAEM, trained and scored as anomalib trains it, for benchmarks/inspection.py.

This file runs inside benchmarks/.venv-anomalib (made by benchmarks/inspection.py), never with
convae: it imports only anomalib, torch, numpy and Pillow. It builds ``anomalib.models.Draem``
with the set's own train/good folder as its ``dtd_dir`` (so nothing downloads: anomalib would
otherwise fetch DTD), and runs exactly its ``training_step`` (its PerlinAnomalyGenerator, its
DraemModel, its DraemLoss; Adam lr 1e-4 from its ``configure_optimizers``, batch 8 as in its
config) on the good parts for a wall-time budget, resized as its pre-processor does (Resize
only, no normalisation). Then, in eval mode, its model gives each test part an anomaly map and
anomalib's own image score (the map's maximum), which are saved for the benchmark to measure
with the same metrics as every other method. Gray parts are given as three equal channels,
as anomalib's Folder datamodule reads them.

Usage: python anomalib_peer.py SET_DIR SIZE SECONDS OUT.npz
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp"}


def load(paths: list[Path], size: int) -> torch.Tensor:
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255)


def main() -> None:
    from anomalib.models import Draem

    root, size, seconds, out = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
    torch.manual_seed(0)
    torch.set_num_threads(2)
    good = sorted(p for p in (root / "train" / "good").iterdir() if p.suffix.lower() in EXTENSIONS)
    test = sorted(p for p in (root / "test").rglob("*") if p.suffix.lower() in EXTENSIONS)
    train = load(good, size)
    module = Draem(dtd_dir=root / "train" / "good")
    optimizers, _ = module.configure_optimizers()
    optimizer = optimizers[0]
    module.model.train()
    generator = torch.Generator().manual_seed(0)
    started, steps, epochs = time.perf_counter(), 0, 0
    while time.perf_counter() - started < seconds:
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), 8):
            images = train[order[start:start + 8]]
            augmented, masks = module.augmenter(images)
            reconstruction, prediction = module.model(augmented)
            loss = module.loss(images, reconstruction, masks, prediction)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - started >= seconds:
                break
        epochs += 1
    trained = time.perf_counter() - started
    module.model.eval()
    maps, scores = [], []
    with torch.no_grad():
        for start in range(0, len(test), 16):
            found = module.model(load(test[start:start + 16], size))
            maps.append(found.anomaly_map.float().numpy())
            scores.append(found.pred_score.float().numpy())
    np.savez(out, maps=np.concatenate(maps), scores=np.concatenate(scores),
             files=np.array([str(p.relative_to(root / "test")) for p in test]), trained_seconds=trained,
             steps=steps, epochs=epochs, train_images=len(train))


if __name__ == "__main__":
    main()
