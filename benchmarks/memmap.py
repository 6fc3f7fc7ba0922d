"""Data larger than memory: batches and training from the memory-mapped cache, against RAM.

The 50,000 CIFAR-10 training PNGs (CIFAR10-png/train, 147 MiB decoded) are loaded as a
folder twice, each side in its own process so peak memory is its own:

- ``memory``: no budget set, the usual in-memory decode (and safetensors cache);
- ``mapped``: ``CONVAE_MEMORY_BUDGET=16M``, so the folder is decoded once, in chunks, into
  the memory-mapped cache, and batches are read from the mapped file.

Each side reports its first load (decode), a second load (from its cache), one shuffled
epoch of ``Batches`` (batch 128, float on the CPU) and one epoch of training the default
``conv`` preset, in images per second, and the process's peak RSS. The page cache is warm
(the file was just written), which is the common case on a machine with free memory; a
cold read adds the disk's random-read time.

Run: ``python benchmarks/memmap.py`` (about 3 minutes on 2 cores; needs the real data).
Results: benchmarks/results/memmap.json and memmap.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit, data_root, machine, write_results


def one_side(side: str, cache: str, threads: int) -> dict:
    os.environ["CONVAE_CACHE"] = cache
    if side == "mapped":
        os.environ["CONVAE_MEMORY_BUDGET"] = "16M"
    import warnings

    import torch

    from convae.data import Batches, load_folder
    from convae.training import TrainConfig, Trainer

    warnings.simplefilter("ignore")
    torch.set_num_threads(threads)
    root = data_root() / "CIFAR10-png"
    result: dict = {"side": side}
    for attempt in ("first_load_s", "second_load_s"):
        started = time.perf_counter()
        data = load_folder(root, "train")
        result[attempt] = round(time.perf_counter() - started, 2)
    result["images"] = len(data)
    result["backing"] = data.backing is not None
    started = time.perf_counter()
    seen = sum(len(x) for x in Batches(data.images, 128, shuffle=True, seed=0))
    result["batches_images_per_s"] = round(seen / (time.perf_counter() - started))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(dataset=f"folder:{root}", epochs=1, threads=threads, logger="none", val_fraction=0.0)
        row = Trainer(cfg, Path(tmp) / "run", progress=False).fit()
    result["train_images_per_s"] = row["images_per_s"]
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", choices=("memory", "mapped"), help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_side(args.one, args.cache, args.threads)))
        return
    data_root()
    sides = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("memory", "mapped"):
            out = subprocess.run([sys.executable, __file__, "--one", side, "--cache", str(Path(tmp) / side),
                                  "--threads", str(args.threads)], capture_output=True, text=True, check=True)
            sides.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(sides[-1], flush=True)
    payload = {"benchmark": "memmap", "commit": commit(), "machine": machine(), "sides": sides}
    path = write_results("memmap.json", payload)
    lines = ["| side | first load | second load | batches, images/s | training, images/s | peak RSS |",
             "|---|---|---|---|---|---|"]
    for s in sides:
        lines.append(f"| {s['side']} | {s['first_load_s']} s | {s['second_load_s']} s | {s['batches_images_per_s']:,} | "
                     f"{s['train_images_per_s']:,} | {s['peak_rss_mib']} MiB |")
    (path.parent / "memmap.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
