"""Validation sets for choosing `--task inspect` settings, never the benchmark's test sets.

benchmarks/inspection.py measures on six sets made from scikit-image pictures; changes to the
simulator or the presets are chosen here instead, on sets made the same way from pictures the
benchmark never uses: scikit-learn's ``china.jpg`` (a photo: roofs, trees, stone) and
scikit-image's ``hubble_deep_field`` (dark sky with stars and galaxies, a texture). Each set
gets all five painted kinds (scratch, spot, missing, stain, blur). The run prints and writes
image AUROC, pixel AUROC and AUPRO, overall and per kind, with the commit, and a map check
(image AUROC for each pooling window, how high the maps reach on good and defective parts),
so two versions of the library can be compared side by side (run it once per version;
``PYTHONPATH=<other checkout>/src`` picks the other one).

Run: ``python benchmarks/inspection_validation.py [--budget 240] [--train-seed N] [--crop N] [--calibrate]
[--out FILE]``; results go to
benchmarks/results/inspection-validation-<commit>[-cropN][-calibrated][-seedN].json unless ``--out``
says otherwise. ``--calibrate`` sizes the epochs to the budget from a 3-epoch run on each set
(its wall time over 3, start-up included, so it is rough and the runs end a little early)
instead of budget / 11 s; use it to compare settings whose epochs take different times. The sets
are the same for every ``--train-seed``: another seed trains the same runs from another start and
another draw of simulated defects, which shows how much one run varies.
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
from inspection import KEYS, PARTS, SECONDS_PER_EPOCH, convae_run

from convae.bench.inspection import DEFECTS, NEW_DEFECTS

KINDS = DEFECTS + NEW_DEFECTS  # all five painted kinds
SETS = ("china", "hubble")
#: Mean-pooling windows (px) the map check scores the test parts with; at 128×128 the default is 11.
POOLS = (1, 3, 5, 7, 11, 15, 21)


def validation_picture(name: str) -> np.ndarray:
    if name == "china":
        from sklearn.datasets import load_sample_image
        return load_sample_image("china.jpg")
    from skimage import data
    return data.hubble_deep_field()


def map_check(run_dir: Path) -> dict:
    """How the trained run's defect maps rank and how sure they are, on its test parts.

    Image AUROC (overall and per kind) for each pooling window in ``POOLS`` says whether
    another window than the default would rank parts better; the medians of the raw map
    maximum and of the pooled peak, over good and over defective parts, say how confident
    the discriminator is (a trained DRAEM maps good parts near 0 and defects near 1).
    """
    from convae.applications.anomaly.evaluate import _auroc_per_class, detection_metrics
    from convae.applications.anomaly.scores import score_images
    from convae.models.draem import pooled_peak
    from convae.run import Run

    run = Run.open(run_dir)
    test = run.splits().test
    _, maps = score_images(run.model("cpu"), test.images, "segment", batch_size=64, device="cpu", with_maps=True)
    good = test.classes.index("good")
    labels = (test.labels != good).numpy().astype(np.int64)  # 1 = defective, as detect --eval counts
    pools = {}
    for size in POOLS:  # scored by detect --eval's own functions
        peaks = pooled_peak(maps, size).double().numpy()
        pools[str(size)] = {"auroc": detection_metrics(peaks, labels)["auroc"],
                            "per_kind": _auroc_per_class(peaks, labels, test, [good])}
    default = pooled_peak(maps).numpy()
    raw = maps.flatten(1).amax(1).numpy()
    return {"pools": pools, "median_map_max": {"good": float(np.median(raw[labels == 0])),
                                               "defect": float(np.median(raw[labels == 1]))},
            "median_pooled_peak": {"good": float(np.median(default[labels == 0])),
                                   "defect": float(np.median(default[labels == 1]))}}


def calibrated_epochs(root: Path, out: Path, threads: int, budget: float, settings: dict) -> int:
    """Epochs that fit the budget: a 3-epoch run's wall time over 3, start-up included (rough, on purpose
    simple: both sides of a comparison are sized the same way)."""
    started = time.perf_counter()
    convae_run(root, out, threads, None, task="inspect", epochs=3, **settings)
    return max(1, int(budget / ((time.perf_counter() - started) / 3)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=240.0, help="training seconds per set")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-seed", type=int, default=0,
                        help="the runs' --seed (the sets stay the same); another one shows how much one run varies")
    parser.add_argument("--crop", type=int, help="train on N×N crops of the parts (--crop; default: the preset's)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"),
                        help="the runs' --precision (default: the preset's)")
    parser.add_argument("--calibrate", action="store_true",
                        help="size the epochs from a 3-epoch run on each set instead of budget / 11 s")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    unknown = [s for s in args.sets.split(",") if s not in SETS]
    if unknown:
        parser.error(f"unknown set: {', '.join(unknown)}")
    if args.crop is not None and args.crop < 0:
        parser.error(f"--crop must be 0 (whole parts) or more, not {args.crop}")
    if args.out is not None and not args.out.parent.is_dir():  # before the minutes of training, not after
        parser.error(f"--out: no folder {args.out.parent}")
    import convae
    from convae.bench.inspection import write_inspection_dataset

    torch.set_num_threads(args.threads)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            root = write_inspection_dataset(Path(tmp) / name, validation_picture(name), size=128, defects=KINDS,
                                            **{**PARTS, "seed": 1})  # the benchmark's counts, other draws
            chosen = {"seed": args.train_seed, **({"crop": args.crop} if args.crop is not None else {}),
                      **({"precision": args.precision} if args.precision else {})}
            epochs = (calibrated_epochs(root, Path(tmp) / f"{name}-calibration", args.threads, args.budget, chosen)
                      if args.calibrate else max(1, round(args.budget / SECONDS_PER_EPOCH)))
            rows[name] = convae_run(root, Path(tmp) / f"{name}-inspect", args.threads, None, task="inspect",
                                    epochs=epochs, max_time=args.budget, **chosen)
            rows[name]["epochs_planned"] = epochs
            print(f"{name}: " + " ".join(f"{k} {rows[name][k]:.3f}" for k in KEYS) + "  per kind image AUROC: "
                  + " ".join(f"{k} {v:.3f}" for k, v in rows[name]["auroc_per_anomalous_class"].items()), flush=True)
            check = rows[name]["map_check"] = map_check(Path(tmp) / f"{name}-inspect")
            print(f"{name} maps: median max good {check['median_map_max']['good']:.2f} defect "
                  f"{check['median_map_max']['defect']:.2f}; image AUROC by pooling window: "
                  + " ".join(f"{size} {v['auroc']:.3f}" for size, v in check["pools"].items()), flush=True)
    means = {k: float(np.mean([r[k] for r in rows.values()])) for k in KEYS}
    print("mean: " + " ".join(f"{k} {v:.3f}" for k, v in means.items()))
    from convae.bench.provenance import commit as source_commit

    library = Path(convae.__file__).resolve().parents[2]  # the checkout whose src/convae ran
    payload = {"benchmark": "inspection-validation", "commit": commit(), "library": str(library),
               "library_commit": source_commit(library),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
               "settings": {"budget": args.budget, "kinds": list(KINDS), "seed": 1,
                            "train_seed": args.train_seed, "crop": args.crop, "calibrate": args.calibrate,
                            "precision": args.precision},
               "sets": rows, "mean": means}
    suffix = ((f"-crop{args.crop}" if args.crop is not None else "") + ("-calibrated" if args.calibrate else "")
              + (f"-seed{args.train_seed}" if args.train_seed else ""))
    out = args.out or (Path(__file__).resolve().parent / "results"
                       / f"inspection-validation-{source_commit(library)[:7]}{suffix}.json")
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
