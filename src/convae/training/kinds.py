"""Which Task a TrainConfig trains through: the one place a new kind of autoencoder run is named."""

from __future__ import annotations

from convae.run.config import TrainConfig, rd_lambda
from convae.training.inspect import InspectTask
from convae.training.rd import RateDistortionTask
from convae.training.tasks import ReconstructTask, Task


def task_for(config: TrainConfig) -> type[Task]:
    """inspect runs train DRAEM, an rd:λ loss a codec, everything else reconstructs (denoise, colorize too)."""
    if config.task == "inspect":
        return InspectTask
    if rd_lambda(config.loss):
        return RateDistortionTask
    return ReconstructTask
