"""CompressAI's bmshj2018-factorized, trained and measured as its own example trains it, for benchmarks/codes.py.

This file runs inside benchmarks/.venv-compressai (made by benchmarks/codes.py), never with
convae: it imports only CompressAI, torch, numpy and Pillow. It trains
``compressai.zoo.bmshj2018_factorized(quality=4)`` (N 128, M 192; λ 0.013 is quality 4 of
CompressAI's ladder) on the CIFAR-10 training PNGs for a wall-time budget, with the settings
of CompressAI's examples/train.py (Adam lr 1e-4, a separate aux optimizer at 1e-3 for the
quantiles, batch 16, gradient clipping at 1.0), calls ``update()``, and then compresses the
given test PNGs one by one. The bytes counted are the entropy-coded strings alone (no shape
or header, which CompressAI leaves to the user), so its rate is if anything flattered.

Usage: python compressai_peer.py CIFAR_TRAIN_DIR TEST_LIST.txt MINUTES LAMBDA OUT.json
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def load(paths: list[Path]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])).permute(0, 3, 1, 2)


def main() -> None:
    from compressai.zoo import bmshj2018_factorized

    train_dir, test_list, minutes, lam, out = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), \
        float(sys.argv[4]), Path(sys.argv[5])
    torch.manual_seed(0)
    torch.set_num_threads(2)
    train = load(sorted(train_dir.rglob("*.png")))
    test = load([Path(line) for line in test_list.read_text().split()])
    net = bmshj2018_factorized(quality=4, pretrained=False)
    aux = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
    main_params = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
    optimizer, aux_optimizer = torch.optim.Adam(main_params, 1e-4), torch.optim.Adam(aux, 1e-3)
    started, steps = time.perf_counter(), 0
    generator = torch.Generator().manual_seed(0)
    while time.perf_counter() - started < minutes * 60:
        x = train[torch.randint(len(train), (16,), generator=generator)].float().div(255)
        output = net(x)
        bpp = sum(torch.log(v).sum() for v in output["likelihoods"].values()) / (-math.log(2) * 16 * 32 * 32)
        loss = lam * 255 ** 2 * torch.nn.functional.mse_loss(output["x_hat"], x) + bpp
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        net.aux_loss().backward()
        aux_optimizer.step()
        steps += 1
    trained = time.perf_counter() - started
    net.update(force=True)
    net.eval()
    nbytes, squared = 0, 0.0
    with torch.no_grad():
        for image in test:
            x = image[None].float().div(255)
            coded = net.compress(x)
            nbytes += sum(len(s[0]) for s in coded["strings"])
            back = net.decompress(coded["strings"], coded["shape"])["x_hat"].clamp(0, 1)
            squared += float(((torch.round(back * 255) / 255 - x) ** 2).mean())
    mse = squared / len(test)
    out.write_text(json.dumps({"codec": "CompressAI bmshj2018-factorized", "setting": f"quality 4 (λ={lam:g})",
                               "bpp_per_image": 8 * nbytes / (len(test) * 32 * 32), "psnr": 10 * math.log10(1 / mse),
                               "steps": steps, "trained_seconds": round(trained, 1)}))


if __name__ == "__main__":
    main()
