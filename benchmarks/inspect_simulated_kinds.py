"""Which of its own simulated defects has an inspect run learned to find? One kind at a time.

The per-epoch check paints the held-out good parts with the simulator's whole mix (Perlin
fills, blurred regions, CutPaste patches, scars) and reports one pixel AUROC, so a kind the
network never learns is hidden by the ones it does. This paints each kind alone on every good
part the run never trained on (its held-out split and the test split's good parts), several
times with fixed seeds, and prints per kind:

* pixel AUROC of the defect map against the painted mask, and image AUROC of the painted parts'
  scores (the run's pooled peak) against the same parts unpainted;
* the mean defect probability inside and outside the masks;
* the reconstruction's squared error inside and outside the masks: a kind the reconstruction
  redraws *better* than the part around it (a blur, under a reconstruction that blurs) gives the
  discriminator, which compares the two, nothing to mark.

It is what measured why tissue's blurred parts rank at chance (docs/inspect.md, "Which
simulated kinds a run learns"). Nothing is trained; a 128×128 run takes about half a minute.

Run: ``python benchmarks/inspect_simulated_kinds.py RUN_DIR [--copies 2] [--json OUT] [--last] [--data-dir DIR]
[--dataset mvtec:PATH]`` (``--last``: state.pt's last weights, where the run ended on a kept epoch)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit, fail, inspect_run_arguments, open_inspect_run, quiet_on_closed_pipe


def good_parts(splits, run_dir: str) -> torch.Tensor:
    """uint8 N×C×H×W: the held-out good parts and the test split's good parts (none were trained on)."""
    from convae.core.errors import ConvaeError

    test = splits.test
    parts = [] if splits.val is None else [splits.val.images]
    if test.classes and "good" in test.classes and test.labels is not None:
        parts.append(test.images[test.labels == test.classes.index("good")])
    if not parts or sum(len(p) for p in parts) == 0:
        raise ConvaeError(f"{run_dir}: no good parts outside training (no held-out split, no test/good)")
    return torch.cat(parts)


def kind_figures(model: torch.nn.Module, painted: torch.Tensor, masks: torch.Tensor,
                 clean_peaks: torch.Tensor) -> dict[str, float]:
    """The figures of one kind: ``painted``/``masks`` hold only the parts the kind changed."""
    from sklearn.metrics import roc_auc_score

    from convae.models.draem import pooled_peak

    with torch.no_grad():
        maps, reconstruction = model.defect_map(painted)
    error = ((painted - reconstruction) ** 2).mean(1)
    inside = masks.bool()
    peaks = pooled_peak(maps)
    labels = np.r_[np.zeros(len(clean_peaks)), np.ones(len(peaks))]
    return {"parts": len(painted), "share_of_part": float(inside.float().mean()),
            "pixel_auroc": float(roc_auc_score(inside.flatten().numpy(), maps.flatten().double().numpy())),
            "image_auroc": float(roc_auc_score(labels, np.r_[clean_peaks.numpy(), peaks.numpy()])),
            "map_inside": float(maps[inside].mean()), "map_outside": float(maps[~inside].mean()),
            "error_inside": float(error[inside].mean()), "error_outside": float(error[~inside].mean())}


def measure(run, model: torch.nn.Module, copies: int) -> dict[str, dict[str, float]]:
    """Per simulated kind, the figures of ``kind_figures`` over ``copies`` seeded paintings of each good part."""
    from convae.data.corrupt import batch_generator
    from convae.data.defects import KINDS, DefectSimulator
    from convae.data.textures import load_anomaly_source
    from convae.models.draem import pooled_peak

    splits, config = run.splits(), run.config.training
    clean = good_parts(splits, str(run.path)).float().div(255)
    channels, height, width = clean.shape[1:]
    sources = (load_anomaly_source(config.anomaly_source, channels, (height, width), config.seed)
               if config.anomaly_source else None)
    simulator = DefectSimulator(sources, pool=splits.train.images)  # what the run's training painted with
    with torch.no_grad():
        clean_peaks = pooled_peak(model.defect_map(clean)[0])
    found = {}
    for kind in KINDS:
        painted, masks = [], []
        for copy in range(copies):
            for index, part in enumerate(clean):
                image, mask = simulator.paint(part, batch_generator(config.seed, -100 - copy, index), kind)
                if mask.any():  # a Perlin shape can fall wholly below its threshold: nothing painted
                    painted.append(image)
                    masks.append(mask)
        found[kind] = kind_figures(model, torch.stack(painted), torch.stack(masks), clean_peaks)
    return found


def measure_real(run, model: torch.nn.Module) -> dict[str, dict[str, float]]:
    """The same figures for each real defect kind of the test split (where it has masks), against its good parts."""
    from convae.models.draem import pooled_peak

    test = run.splits().test
    if test.masks is None or not test.classes or "good" not in test.classes:
        return {}
    good = test.classes.index("good")
    with torch.no_grad():
        clean_peaks = pooled_peak(model.defect_map(test.images[test.labels == good].float().div(255))[0])
    return {name: kind_figures(model, test.images[chosen].float().div(255), test.masks[chosen], clean_peaks)
            for index, name in enumerate(test.classes)
            if index != good and (chosen := test.labels == index).any() and test.masks[chosen].any()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    inspect_run_arguments(parser)
    parser.add_argument("--copies", type=int, default=2, help="seeded paintings of each good part per kind")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.copies < 1:
        parser.error(f"--copies must be 1 or more, not {args.copies}")
    if args.json is not None and not args.json.parent.is_dir():
        parser.error(f"--json: no folder {args.json.parent}")
    from convae.core.errors import ConvaeError

    torch.set_num_threads(2)
    run, model = open_inspect_run(args)
    try:
        found = {"simulated": measure(run, model, args.copies), "test": measure_real(run, model)}
    except ConvaeError as error:
        fail(error)
    if args.json is not None:  # before printing: a closed pipe must not lose the figures
        from convae.run import read_metrics

        training = run.config.training
        about = {"run": str(Path(args.run_dir).resolve()), "dataset": training.dataset, "seed": training.seed,
                 "epochs_done": len(read_metrics(run.path)), "weights": "last" if args.last else "model.safetensors",
                 "commit": commit(), "copies": args.copies,
                 "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        args.json.write_text(json.dumps({**about, **found}, indent=2) + "\n", encoding="utf-8")
    print(f"{'kind':18s} {'parts':>5s} {'pixel':>6s} {'image':>6s}  defect probability in / out"
          "   reconstruction error in / out")
    for where, kinds in found.items():
        for kind, f in kinds.items():
            print(f"{where + ' ' + kind:18s} {f['parts']:5d} {f['pixel_auroc']:6.3f} {f['image_auroc']:6.3f}  "
                  f"{f['map_inside']:.3f} / {f['map_outside']:.3f}{'':18s}"
                  f"{f['error_inside']:.4f} / {f['error_outside']:.4f}")


if __name__ == "__main__":
    quiet_on_closed_pipe(main)
