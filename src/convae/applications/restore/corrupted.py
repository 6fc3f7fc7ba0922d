"""A run's evaluation images, corrupted exactly as the trainer corrupted them.

The test (or train) split is corrupted in chunks of ``max(batch_size, 256)`` images with
the generator ``batch_generator(seed, -1, chunk)``, as the trainer does for its test loss,
so ``evaluate``'s MSE equals the run's last ``test_loss`` for an MSE run. Validation
images (which choose the baseline) use ``batch_generator(seed, -2, chunk)``.
"""

from __future__ import annotations

from typing import Iterator

import torch

from convae.core.errors import ConvaeError
from convae.data import Batches
from convae.data.corrupt import Corruption, batch_generator
from convae.run import Run

RESTORE_TASKS = ("denoise", "colorize")
#: Seed "epochs" of the corruption generators: -1 the evaluated split (as the trainer), -2 validation.
EVAL_TAG, VAL_TAG = -1, -2


def eval_chunk(run: Run) -> int:
    """The chunk size the trainer corrupts evaluation images in: max(batch_size, 256)."""
    return max(int(run.config["training"].get("batch_size") or 1), 256)


def run_corruption(run: Run) -> Corruption:
    task = run.config.task
    if task not in RESTORE_TASKS:
        raise ConvaeError(f"this run's task is {task!r}, not denoise or colorize")
    corruption = run.config.training.corruption()  # type: ignore[union-attr]
    if corruption is None:
        raise ConvaeError(f"the {task} run has no corruption in its config (training.noise)")
    return corruption


def corrupted_batches(
    images: torch.Tensor, corruption: Corruption, seed: int, chunk: int, device: torch.device | str, tag: int = EVAL_TAG
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(clean, corrupted) float batches of a uint8 split, corrupted with (seed, tag, chunk index)."""
    for index, x in enumerate(Batches(images, chunk, shuffle=False, seed=0, device=device)):
        yield x, corruption(x, batch_generator(seed, tag, index, device))


def as_output(x_in: torch.Tensor, channels: int) -> torch.Tensor:
    """The corrupted input as an image of the output's channel count (gray replicated to RGB)."""
    return x_in if x_in.shape[1] == channels else x_in.expand(-1, channels, -1, -1)
