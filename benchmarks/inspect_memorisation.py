"""Has an inspect run memorised its training parts? Compare what it does on them and on held-out good parts.

A DRAEM discriminator learns to mark where the input and its reconstruction differ. When the
reconstructive network has learned the training parts themselves, it redraws them much better
than any unseen part, and the discriminator then marks much of every unseen good part. This
prints, for the run's training parts, its held-out good parts and its test parts: the
reconstruction's MSE, the mean defect probability and the median of each part's highest one.
It is what showed the cause of the long runs' collapse on grass and gravel (docs/inspect.md,
"Keeping the best epoch"). The weights measured are model.safetensors, or with ``--last`` the
last epoch's from state.pt (where the run ended on a kept epoch).

Run: ``python benchmarks/inspect_memorisation.py RUN_DIR [--last] [--data-dir DIR] [--dataset mvtec:PATH]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fail, inspect_run_arguments, open_inspect_run, quiet_on_closed_pipe


def measure(model: torch.nn.Module, images: torch.Tensor, batch: int = 16) -> dict[str, float]:
    errors, means, peaks = [], [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = images[start:start + batch].float().div(255)
            reconstruction, _ = model(x, segment=True)
            maps, _ = model.defect_map(x)
            errors.append(((reconstruction - x) ** 2).mean((1, 2, 3)))
            means.append(maps.flatten(1).mean(1))
            peaks.append(maps.flatten(1).amax(1))
    return {"recon_mse": float(torch.cat(errors).mean()), "map_mean": float(torch.cat(means).mean()),
            "map_max_median": float(torch.cat(peaks).median())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    inspect_run_arguments(parser)
    args = parser.parse_args()
    from convae.core.errors import ConvaeError

    run, model = open_inspect_run(args)
    try:
        splits = run.splits()
    except ConvaeError as error:
        fail(error)
    torch.set_num_threads(2)
    for name, part in (("training parts", splits.train), ("held-out good parts", splits.val),
                       ("test parts", splits.measured(splits.test))):
        if part is None or len(part) == 0:
            continue
        found = measure(model, part.images)
        print(f"{name:20s} {len(part):4d}  reconstruction MSE {found['recon_mse']:.5f}  mean defect probability "
              f"{found['map_mean']:.3f}  median of each part's highest {found['map_max_median']:.3f}")


if __name__ == "__main__":
    quiet_on_closed_pipe(main)
