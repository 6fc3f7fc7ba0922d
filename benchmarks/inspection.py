"""Inspection benchmark: `--task inspect` (DRAEM) against PCA, the patch autoencoder and anomalib's DRAEM.

Each set is a folder in the MVTec AD layout (convae.bench.inspection) made from a picture
that ships inside scikit-image: textures (brick, grass, gravel, tissue from
``immunohistochemistry``, moon: random 128×128 crops, flips and quarter turns) and one
object (the ``coffee`` photo, resized, so every part is the same cup shifted by a few
pixels). The first four have painted scratches, spots and missing patches; tissue and moon
have defect kinds the others lack (a colour stain, a blurred region) plus scratches. Masks
are exactly the painted pixels.

Methods, side by side on the same folders, in this one process (anomalib in its own venv):

* ``pca``: PCA fitted on P×P patches of train/good (``PCA_VARIANCE`` of the variance); a pixel's error is
  the mean squared reconstruction error of the patches covering it, an image's score its smoothed map's peak.
* ``patch_ae``: ``convae train --dataset mvtec:DIR --patch 32`` (the conv preset, 30 epochs,
  cosine) scored with ``--score mse``, the setting the earlier benchmark fixed.
* ``inspect``: ``convae train --dataset mvtec:DIR --task inspect --max-time BUDGET`` with
  ``--epochs`` sized so the cosine schedule ends at the budget, then ``convae detect --eval``.
  The size comes from timing the first ``CALIBRATION_EPOCHS`` epochs of a preset-length run on the
  set, per-epoch check included, not counted in the budget (machines differ by 1.5× in speed). It is
  rough: most runs stop on time a few epochs before the planned end.
  ``--epochs N`` fixes it instead. A run that ends on a kept epoch (keep_best) has the last's in ``last_epoch``.
* ``no_simulation`` (the ablation): the same reconstructive network (``draem-recon``), the
  same budget, trained as a plain autoencoder with no simulated defects and scored by its
  reconstruction error (``ssim``, convae's default), so what the simulation adds is measured.
* ``anomalib``: anomalib's DRAEM (benchmarks/anomalib_peer.py) for the same wall time, in
  benchmarks/.venv-anomalib (created here when missing; ``$CONVAE_ANOMALIB_VENV`` points at
  another), with the set's train/good folder as its DTD directory so nothing downloads.

Every method is measured by the same functions (convae.applications.anomaly.evaluate):
image AUROC, pixel AUROC and AUPRO (FPR ≤ 0.3), overall and per defect type. The settings
(budget, epochs per second, lr, widths) were chosen on validation sets made from
scikit-learn's china.jpg, never on these test sets.

Run: ``python benchmarks/inspection.py [--budget 600] [--methods pca,inspect,anomalib]``
(per set: about 2.3 × budget plus 3 minutes for all five). ``--train-seed N`` reseeds the inspect
and ablation runs. Results: benchmarks/results/inspection.{json,md} at the issue's 600 s budget,
``inspection-<budget>s.*`` at any other, rewritten after every set (a stopped run keeps them).
``--keep-from FILE`` fills the methods not run this time from an earlier results file, only
where the figures cannot depend on the budget (PCA, patch_ae) or the budgets match; each
method's figures name the commit and date they were measured at, and the file's sets that a
run of fewer ``--sets`` does not measure are carried over whole, so none is dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit, machine, write_results

REPO = Path(__file__).resolve().parents[1]
PCA_VARIANCE = 0.95
FIRST = ("scratch", "spot", "missing")
NEW = ("stain", "blur", "scratch")
#: set name -> (scikit-image picture, defect kinds)
SETS = {"brick": ("brick", FIRST), "grass": ("grass", FIRST), "gravel": ("gravel", FIRST),
        "coffee": ("coffee", FIRST), "tissue": ("immunohistochemistry", NEW), "moon": ("moon", NEW)}
#: Wall seconds of one inspect epoch at 128×128, 72 parts, 2 cores, with its per-epoch check (china
#: validation set, slower machine): a run with no calibration (the validation script) plans budget / this.
SECONDS_PER_EPOCH = 11.0
#: Epochs of the short run that times one inspect epoch on the set (the first is not counted),
#: for --epochs = budget / that.
CALIBRATION_EPOCHS = 3
PEER_VENV = Path(os.environ.get("CONVAE_ANOMALIB_VENV", REPO / "benchmarks" / ".venv-anomalib"))
PEER_PACKAGES = ("torch==2.14.1", "torchvision==0.29.1", "anomalib==2.7.0")
KEYS = ("auroc", "pixel_auroc", "aupro")
PARTS = {"train": 80, "test_good": 20, "test_defect": 10, "seed": 0}  #: each set's parts (write_inspection_dataset)
METHODS = ("pca", "patch_ae", "no_simulation", "anomalib", "inspect")
#: Methods whose figures depend on --budget (the others fit or train a fixed number of epochs).
BUDGET_BOUND = ("no_simulation", "anomalib", "inspect")


def picture(name: str, size: int) -> np.ndarray:
    from PIL import Image
    from skimage import data

    array = getattr(data, name)()
    if name == "coffee":  # an object: the whole photo, a few pixels of jitter per part
        return np.asarray(Image.fromarray(array).resize((size + 8, size + 8), Image.BICUBIC))
    return array


def pca_maps(train: torch.Tensor, test: torch.Tensor, patch: int) -> torch.Tensor:
    """Per-pixel PCA reconstruction error of the patches (stride patch/4) covering each pixel."""
    from sklearn.decomposition import PCA

    stride = max(patch // 4, 1)

    def patches(images: torch.Tensor) -> torch.Tensor:
        x = images.float().div(255)
        return F.unfold(x, patch, stride=stride).transpose(1, 2)  # N × L × (C·P·P)

    fitted = PCA(n_components=PCA_VARIANCE, svd_solver="full", random_state=0)
    fitted.fit(patches(train).reshape(-1, train.shape[1] * patch * patch).numpy())
    maps = []
    for image in test:
        p = patches(image[None])[0].numpy()
        error = (fitted.inverse_transform(fitted.transform(p)) - p) ** 2  # L × (C·P·P)
        h, w = image.shape[-2:]
        summed = F.fold(torch.from_numpy(error.T[None]).float(), (h, w), patch, stride=stride)
        count = F.fold(torch.ones(1, error.shape[1], error.shape[0]), (h, w), patch, stride=stride)
        maps.append((summed / count.clamp(min=1)).mean(1)[0])
    return torch.stack(maps)


def measured(scores: np.ndarray, maps: torch.Tensor, test: Any) -> dict[str, Any]:
    """Image AUROC, pixel AUROC and AUPRO, overall and per defect type: the same functions for every method."""
    from convae.applications.anomaly.evaluate import _auroc_per_class, detection_metrics, segmentation_metrics

    good = test.classes.index("good")  # classes sort by name: "blur" comes before "good"
    labels = (test.labels != good).numpy().astype(np.int64)
    return {**detection_metrics(scores, labels),
            "auroc_per_anomalous_class": _auroc_per_class(scores, labels, test, [good]),
            **segmentation_metrics(maps, test.masks, test.labels.numpy(), [good], list(test.classes))}


def convae_run(root: Path, out: Path, threads: int, score: str | None, **settings: Any) -> dict[str, Any]:
    """Train a convae run on the set and measure it with detect --eval's own function."""
    from convae.applications.anomaly import evaluate_detection
    from convae.bench.inspection import last_epoch_figures  # what the run's last weights score, if not kept
    from convae.run import read_metrics
    from convae.training import TrainConfig, Trainer

    config = TrainConfig(dataset=f"mvtec:{root}", threads=threads, logger="none", **settings)
    started = time.perf_counter()
    ended = Trainer(config, out, progress=False, log=lambda line: None).fit()  # not_kept: a fall, no memorisation
    trained = time.perf_counter() - started
    result = evaluate_detection(out, score=score, figures=False, device="cpu")
    checks = [row.get("val_pixel_auroc") for row in read_metrics(out)]  # each epoch's held-out check (keep_best)
    return {**{k: result[k] for k in (*KEYS, "auroc_per_anomalous_class", "pixel_auroc_per_anomalous_class",
                                      "aupro_per_anomalous_class")},
            "train_seconds": round(trained, 1), "epochs_done": len(checks), "score": result["score"],
            "stopped_on_time": bool(ended.get("stopped_on_time")), "last_epoch": last_epoch_figures(out, KEYS, score),
            **({"val_pixel_auroc_simulated": checks[-1], "checks": checks} if any(checks) else {}),
            **{k: ended[k] for k in ("not_kept",) if ended.get(k)}}


def anomalib_run(root: Path, size: int, budget: float, work: Path, test: Any) -> dict[str, Any]:
    """anomalib's DRAEM for the same wall time, in its own venv; measured here like the others."""
    python = PEER_VENV / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
        out = work / f"anomalib-{root.name}.npz"
        started = time.perf_counter()
        subprocess.run([str(python), str(REPO / "benchmarks" / "anomalib_peer.py"), str(root), str(size), str(budget),
                        str(out)], check=True, capture_output=True, text=True)
        wall = time.perf_counter() - started
    except (subprocess.CalledProcessError, OSError) as error:
        detail = getattr(error, "stderr", "") or ""
        return {"error": f"{error}: {detail.strip().splitlines()[-1] if detail.strip() else ''}"}
    found = np.load(out)
    order = {name: i for i, name in enumerate(found["files"].tolist())}
    expected = [f"{test.classes[label]}/{index:03d}.png" for label, index in _test_names(test)]
    chosen = [order[name] for name in expected]
    maps = torch.from_numpy(found["maps"][chosen]).float()
    scores = found["scores"][chosen].astype(np.float64)
    return {**{k: v for k, v in measured(scores, maps, test).items() if k in (*KEYS, "auroc_per_anomalous_class",
                                                                             "pixel_auroc_per_anomalous_class",
                                                                             "aupro_per_anomalous_class")},
            "train_seconds": round(float(found["trained_seconds"]), 1), "wall_seconds": round(wall, 1),
            "steps": int(found["steps"]), "epochs_done": int(found["epochs"]), "venv": str(PEER_VENV)}


def _test_names(test: Any) -> list[tuple[int, int]]:
    """(class, file number) of each test image in convae's order (sorted per class, as the folder loader reads)."""
    counts: dict[int, int] = {}
    names = []
    for label in test.labels.tolist():
        names.append((label, counts.get(label, 0)))
        counts[label] = counts.get(label, 0) + 1
    return names


def pca_run(train: Any, test: Any, patch: int) -> dict[str, Any]:
    from convae.applications.anomaly.scores import peak_score

    started = time.perf_counter()
    maps = pca_maps(train.images, test.images, patch)
    return {**measured(np.array([peak_score(m) for m in maps]), maps, test),
            "train_seconds": round(time.perf_counter() - started, 1)}


def _with_provenance(previous: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """An earlier file's row whose measured methods each name where they were measured (the file's run by default)."""
    earlier = {"commit": previous["commit"], "date": previous["machine"]["date"],
               "budget": previous["settings"]["budget"]}
    return {**row, **{m: {**row[m], "measured_in": row[m].get("measured_in", earlier)} for m in METHODS
                      if m in row and "auroc" in row[m]}}


def kept_methods(previous: dict[str, Any] | None, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The figures of methods not run now that an earlier run measured validly for these settings."""
    if previous is None:
        return {}
    settings = previous["settings"]
    if (settings["size"], settings["patch"]) != (args.size, args.patch):
        return {}
    rows = [_with_provenance(previous, r) for r in previous["sets"] if r["set"] == name]
    if not rows:
        return {}
    return {method: rows[0][method] for method in METHODS if method in rows[0] and "auroc" in rows[0][method]
            and (method not in BUDGET_BOUND or settings["budget"] == args.budget)}


def carried_sets(previous: dict[str, Any] | None, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The earlier file's sets that this run does not measure, whole, so a run of fewer --sets drops none."""
    if previous is None:
        return []
    settings = previous["settings"]
    if (settings["size"], settings["patch"], settings["budget"]) != (args.size, args.patch, args.budget):
        return []
    now = args.sets.split(",")
    return [_with_provenance(previous, r) for r in previous["sets"] if r["set"] not in now]


class _Timed(Exception):
    """The calibration run has timed its epochs."""


def planned_epochs(root: Path, out: Path, args: argparse.Namespace, kept: dict[str, Any]) -> tuple[int, float]:
    """Epochs for the budget: timed on this set and machine, or the kept inspect run's (for the ablation).

    A run of only the ablation (``--methods no_simulation --keep-from``) trains the epochs the
    kept inspect run planned, so both train the same number whatever the machine.
    """
    from convae.training import TrainConfig, Trainer

    if args.epochs:
        return args.epochs, 0.0
    earlier = kept.get("inspect", {})
    if "inspect" not in args.methods and "epochs_planned" in earlier:
        return int(earlier["epochs_planned"]), float(earlier["seconds_per_epoch"])
    ends: list[float] = []  # when each epoch's line (after its per-epoch check) came

    def stamp(line: str) -> None:
        if line.startswith("epoch "):
            ends.append(time.perf_counter())
            if len(ends) == CALIBRATION_EPOCHS:
                raise _Timed

    # A preset-length run cut short: its epochs measure test_loss as rarely as the real run's do.
    try:
        Trainer(TrainConfig(dataset=f"mvtec:{root}", threads=args.threads, logger="none", task="inspect"), out,
                progress=False, log=stamp).fit()
    except _Timed:
        pass
    seconds = (ends[-1] - ends[0]) / (len(ends) - 1)  # from the end of the first: no start-up, no warm-up
    return max(1, int(args.budget / seconds)), round(seconds, 2)


def one_set(name: str, args: argparse.Namespace, tmp: Path, here: dict[str, Any],
            kept: dict[str, Any]) -> dict[str, Any]:
    from convae.bench.inspection import write_inspection_dataset
    from convae.data import load_dataset

    source, defects = SETS[name]
    root = write_inspection_dataset(tmp / name, picture(source, args.size), size=args.size, defects=defects, **PARTS)
    train, test = load_dataset(f"mvtec:{root}", "train"), load_dataset(f"mvtec:{root}", "test")
    row: dict[str, Any] = {"set": name, "picture": source, "defects": list(defects),
                           "images": {"train_good": len(train), "test": len(test),
                                      "test_defective": int((test.labels != test.classes.index("good")).sum())}}
    runs = {
        "pca": lambda: pca_run(train, test, args.patch),
        "patch_ae": lambda: convae_run(root, tmp / f"{name}-patch", args.threads, "mse", patch=args.patch,
                                       epochs=30, lr_schedule="cosine"),
        "no_simulation": lambda: convae_run(root, tmp / f"{name}-recon", args.threads, "ssim", model="draem-recon",
                                            model_args={"width": 16}, loss="mse", lr=3e-3, lr_schedule="cosine",
                                            epochs=epochs, max_time=args.budget, val_fraction=0.1,
                                            seed=args.train_seed),
        "anomalib": lambda: anomalib_run(root, args.size, args.budget, tmp, test),
        "inspect": lambda: convae_run(root, tmp / f"{name}-inspect", args.threads, None, task="inspect",
                                      epochs=epochs, max_time=args.budget, seed=args.train_seed),
    }
    timed = [m for m in ("inspect", "no_simulation") if m in args.methods]
    epochs, per_epoch = planned_epochs(root, tmp / f"{name}-calibration", args, kept) if timed else (0, 0.0)
    for method in METHODS:
        if method in args.methods:
            sized = {"epochs_planned": epochs, "seconds_per_epoch": per_epoch} if method in timed else {}
            row[method] = {**runs[method](), **sized, "measured_in": here}
        else:
            row[method] = kept.get(method, {"error": "not run"})
    print(f"{name}: " + " | ".join(f"{m} " + (" ".join(f"{row[m][k]:.3f}" for k in KEYS) if "auroc" in row[m]
                                               else row[m].get("error", "?")) for m in METHODS), flush=True)
    return row


def mean_of(rows: list[dict[str, Any]], method: str) -> dict[str, float | None]:
    values = {k: [r[method][k] for r in rows if k in r[method]] for k in KEYS}
    return {k: float(np.mean(v)) if len(v) == len(rows) else None for k, v in values.items()}


def table(rows: list[dict[str, Any]], means: dict[str, dict[str, float | None]], budget: float) -> str:
    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    head = ["| set | defects |", "|---|---|"]
    for method in METHODS:
        head[0] += f" {method} image | {method} pixel | {method} AUPRO |"
        head[1] += "---|---|---|"
    lines = list(head)
    for r in rows:
        lines.append(f"| {r['set']} | {', '.join(r['defects'])} |" + "".join(
            f" {cell(r[m].get('auroc'))} | {cell(r[m].get('pixel_auroc'))} | {cell(r[m].get('aupro'))} |"
            for m in METHODS))
    lines.append("| **mean** | |" + "".join(f" {cell(means[m]['auroc'])} | {cell(means[m]['pixel_auroc'])} | "
                                            f"{cell(means[m]['aupro'])} |" for m in METHODS))
    seconds = ["", "Training seconds per set (inspect, no_simulation and anomalib share the budget of "
               f"{budget:g} s; patch_ae trains 30 epochs, PCA fits):", "",
               "| set | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for r in rows:
        seconds.append(f"| {r['set']} | " + " | ".join(str(r[m].get("train_seconds", "–")) + (
            f" ({r[m]['epochs_done']} epochs)" if m in ("inspect", "no_simulation") and "epochs_done" in r[m] else "")
            for m in METHODS) + " |")
    kinds = sorted({d for r in rows for d in r["defects"]})
    missing = ["", "Image AUROC per defect type (inspect / PCA):", "", "| set | " + " | ".join(kinds) + " |",
               "|---|" + "---|" * len(kinds)]
    for r in rows:
        ours, pca = r["inspect"].get("auroc_per_anomalous_class", {}), r["pca"].get("auroc_per_anomalous_class", {})
        missing.append(f"| {r['set']} | " + " | ".join(
            f"{ours[k]:.3f} / {pca[k]:.3f}" if k in ours and k in pca else "" for k in kinds) + " |")
    sources = sorted({(m, r[m]["measured_in"]["commit"], r[m]["measured_in"]["date"], r[m]["measured_in"]["budget"])
                      for r in rows for m in METHODS if "measured_in" in r[m]})
    provenance = ["", "Where each method's figures were measured (commit, date, budget in s):", ""]
    provenance += [f"- {m}: {c}, {d}, {b:g}" for m, c, d, b in sources]
    return "\n".join(lines + seconds + missing + provenance) + "\n"


def results_name(budget: float, train_seed: int = 0) -> str:
    """inspection at the issue's budget and seed 0; another budget or seed gets its own file."""
    name = "inspection" if budget == 600 else f"inspection-{budget:g}s"
    return name if train_seed == 0 else f"{name}-seed{train_seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds per set and method")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, help="epochs of inspect and no_simulation instead of timing one on "
                        "the set: the same compute as an earlier run on another machine")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS))
    parser.add_argument("--keep-from", type=Path, help="earlier results JSON to fill the methods not run now")
    parser.add_argument("--train-seed", type=int, default=0, help="seed of the inspect and no_simulation runs "
                        "(another one measures how far a reseed moves the figures; results get a -seedN suffix)")
    args = parser.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS] + [s for s in args.sets.split(",") if s not in SETS]
    if unknown:
        parser.error(f"unknown method or set: {', '.join(unknown)}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, not {args.epochs}")
    previous = None
    if args.keep_from is not None:  # before the minutes of training, not after
        try:
            previous = json.loads(args.keep_from.read_text(encoding="utf-8"))
        except (OSError, ValueError) as problem:
            parser.error(f"--keep-from {args.keep_from}: not a readable results JSON ({problem})")
    torch.set_num_threads(args.threads)
    here = {"commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "budget": args.budget}
    rows: list[dict[str, Any]] = []
    carried = carried_sets(previous, args)
    name = results_name(args.budget, args.train_seed)
    with tempfile.TemporaryDirectory() as tmp:
        for set_name in args.sets.split(","):
            rows.append(one_set(set_name, args, Path(tmp), here, kept_methods(previous, set_name, args)))
            every = sorted(rows + carried, key=lambda r: list(SETS).index(r["set"]))
            means = {method: mean_of(every, method) for method in METHODS}
            payload = {"benchmark": "inspection", "commit": here["commit"], "machine": machine(),
                       "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                                    "pca_variance": PCA_VARIANCE, "train_good": PARTS["train"], "test_good":
                                    PARTS["test_good"], "test_defective_per_type": PARTS["test_defect"],
                                    "calibration_epochs": CALIBRATION_EPOCHS,
                                    "anomalib_packages": list(PEER_PACKAGES),
                                    "sets_done": len(rows), "sets_planned": len(args.sets.split(",")),
                                    "sets_carried": [r["set"] for r in carried]},
                       "sets": every, "mean": means}
            path = write_results(f"{name}.json", payload)
            (path.parent / f"{name}.md").write_text(table(every, means, args.budget), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
