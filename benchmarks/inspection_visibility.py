"""How much does each painted defect change its part? A ceiling for what any detector can find.

The benchmark's sets (benchmarks/inspection.py) and the validation sets paint defects onto
crops of a picture. A blur over a smooth area, or a stain in the colour the part already has,
changes few pixel values, and no method can find a change that is not in the pixels. This
redraws each set exactly as the benchmark does (convae.bench.inspection.inspection_parts) and
prints, per set and kind, over the pixels inside each mask: the mean absolute change in gray
levels (0–255, averaged over channels) and the share of them changed by more than
``VISIBLE`` levels. It trains nothing and takes seconds.

Run: ``python benchmarks/inspection_visibility.py [--sets tissue,moon]``; a run of all sets writes
benchmarks/results/inspection-visibility.json with the commit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import commit, quiet_on_closed_pipe, write_results
from inspection import PARTS, SETS, picture

from convae.bench.inspection import inspection_parts

#: A change of more than this many gray levels counts as visible (PNG keeps whole levels; 4 is 1.6 %).
VISIBLE = 4


def changes(name: str, size: int = 128) -> dict[str, dict[str, list[float]]]:
    """Per kind: each part's mean |change| inside its mask, and the share of the mask changed by > VISIBLE."""
    source, defects = SETS[name]
    found: dict[str, dict[str, list[float]]] = {}
    for _, kind, _, clean, image, mask in inspection_parts(picture(source, size), size=size, defects=defects, **PARTS):
        if mask is None:
            continue
        change = np.abs(image.astype(np.float64) - clean.astype(np.float64))
        change = change.mean(-1) if change.ndim == 3 else change
        inside = change[mask > 0]
        row = found.setdefault(kind, {"mean_change": [], "share_visible": []})
        row["mean_change"].append(round(float(inside.mean()), 2))
        row["share_visible"].append(round(float((inside > VISIBLE).mean()), 3))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS), help="comma list of " + ", ".join(SETS) + " (the results "
                        "file is written only when all are measured, so a partial run never replaces it)")
    args = parser.parse_args()
    names = args.sets.split(",")
    unknown = [s for s in names if s not in SETS]
    if unknown:
        parser.error(f"unknown set: {', '.join(unknown)} (choose from {', '.join(SETS)})")
    every = {name: changes(name) for name in names}
    written = None
    if set(names) == set(SETS):  # written before the lines, so a reader that stops early (| head) loses nothing
        written = write_results("inspection-visibility.json", {
            "benchmark": "inspection-visibility", "commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "visible_levels": VISIBLE, "sets": every})
    for name, kinds in every.items():
        for kind, row in kinds.items():
            means, shares = np.array(row["mean_change"]), np.array(row["share_visible"])
            print(f"{name:7s} {kind:8s} mean |change| in mask {np.median(means):6.1f} levels (parts: "
                  f"{means.min():.1f}–{means.max():.1f}); share changed by more than {VISIBLE}: "
                  f"{np.median(shares):.2f} ({shares.min():.2f}–{shares.max():.2f})", flush=True)
    print(f"wrote {written}" if written else "not written: only some sets were measured")


if __name__ == "__main__":
    quiet_on_closed_pipe(main)
