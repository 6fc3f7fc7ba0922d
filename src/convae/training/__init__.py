"""Training: the one loop (loop.py) and the tasks it trains (tasks.py)."""

from convae.core.openmp import set_openmp_wait_policy

set_openmp_wait_policy()  # before this package imports torch, for library users who train

# ruff: noqa: E402

from convae.core.device import default_threads, pick_device, seed_everything
from convae.run.config import TrainConfig
from convae.run.splits import split_validation
from convae.training.loop import NonFiniteLoss, Trainer, TrainingInterrupted
from convae.training.ranks import Ranks
from convae.training.schedule import loss_function, make_optimizer, scheduled_lr
from convae.training.tasks import ReconstructTask, Task, evaluate_loss

__all__ = [
    "NonFiniteLoss", "Ranks", "ReconstructTask", "Task", "TrainConfig", "Trainer", "TrainingInterrupted",
    "default_threads", "evaluate_loss", "loss_function", "make_optimizer", "pick_device", "scheduled_lr",
    "seed_everything", "split_validation",
]
