"""Validation sets for choosing `--task inspect` settings, never the benchmark's test sets.

benchmarks/inspection.py measures on six sets made from scikit-image pictures; changes to the
simulator or the presets are chosen here instead, on sets made the same way from pictures the
benchmark never uses: scikit-learn's ``china.jpg`` (a photo: roofs, trees, stone) and
scikit-image's ``hubble_deep_field`` (dark sky with stars and galaxies, a texture). Each set
gets all five painted kinds (scratch, spot, missing, stain, blur). The run prints and writes
image AUROC, pixel AUROC and AUPRO, overall and per kind, with the commit, so two versions of
the library can be compared side by side (run it once per version; ``PYTHONPATH=<other
checkout>/src`` picks the other one).

Run: ``python benchmarks/inspection_validation.py [--budget 240] [--out FILE]``; results go to
benchmarks/results/inspection-validation-<commit>.json unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit, machine
from inspection import KEYS, SECONDS_PER_EPOCH, convae_run

from convae.bench.inspection import DEFECTS, NEW_DEFECTS

KINDS = DEFECTS + NEW_DEFECTS  # all five painted kinds
SETS = ("china", "hubble")


def validation_picture(name: str) -> np.ndarray:
    if name == "china":
        from sklearn.datasets import load_sample_image
        return load_sample_image("china.jpg")
    from skimage import data
    return data.hubble_deep_field()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=240.0, help="training seconds per set")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    unknown = [s for s in args.sets.split(",") if s not in SETS]
    if unknown:
        parser.error(f"unknown set: {', '.join(unknown)}")
    import convae
    from convae.bench.inspection import write_inspection_dataset

    torch.set_num_threads(args.threads)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            root = write_inspection_dataset(Path(tmp) / name, validation_picture(name), size=128, train=80,
                                            test_good=20, test_defect=10, seed=1, defects=KINDS)
            epochs = max(1, round(args.budget / SECONDS_PER_EPOCH))
            rows[name] = convae_run(root, Path(tmp) / f"{name}-inspect", args.threads, None, task="inspect",
                                    epochs=epochs, max_time=args.budget)
            print(f"{name}: " + " ".join(f"{k} {rows[name][k]:.3f}" for k in KEYS) + "  per kind image AUROC: "
                  + " ".join(f"{k} {v:.3f}" for k, v in rows[name]["auroc_per_anomalous_class"].items()), flush=True)
    means = {k: float(np.mean([r[k] for r in rows.values()])) for k in KEYS}
    print("mean: " + " ".join(f"{k} {v:.3f}" for k, v in means.items()))
    from convae.bench.provenance import commit as source_commit

    library = Path(convae.__file__).resolve().parents[2]  # the checkout whose src/convae ran
    payload = {"benchmark": "inspection-validation", "commit": commit(), "library": str(library),
               "library_commit": source_commit(library),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
               "settings": {"budget": args.budget, "kinds": list(KINDS), "seed": 1}, "sets": rows, "mean": means}
    out = args.out or Path(__file__).resolve().parent / "results" / f"inspection-validation-{source_commit(library)[:7]}.json"
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
