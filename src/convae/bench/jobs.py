"""The speed suite's jobs: each preset with the data its reference example used, and the plans."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Job:
    """One preset trained both ways on the data its reference example used."""

    name: str
    dataset: str
    model: str
    args: dict[str, Any] = field(default_factory=dict)
    #: The reference's epoch count (the suite may run fewer; the result says how many).
    epochs: int = 10
    #: The reference feeds the fully connected model flat 784-vectors (a Flatten transform).
    flatten: bool = False
    #: Train (and test) on the first N images only, for models too slow for the full set here.
    subset: int | None = None


JOBS: tuple[Job, ...] = (
    Job("fc", "mnist", "fc", {}, 10, flatten=True),
    Job("unpool", "mnist", "unpool", {"maps": 1, "pool": 4}, 5),
    Job("conv-pool", "cifar10", "conv-pool", {}, 10),
    Job("conv", "mnist", "conv", {}, 10, subset=6000),
)

#: Epochs the full suite runs per job: fc as its reference does; the conv presets fewer,
#: to keep the suite near 15 minutes on 2 shared cores (the results record both numbers).
SUITE_EPOCHS = {"fc": 10, "unpool": 2, "conv-pool": 2, "conv": 1}
#: Training images per job in the full suite (None: the whole training split).
SUITE_SUBSETS: dict[str, int | None] = {"fc": None, "unpool": None, "conv-pool": None, "conv": 6000}
#: For a machine whose cores are shared with other work: the same comparisons on less data.
QUICK_EPOCHS = {"fc": 2, "unpool": 1, "conv-pool": 1, "conv": 1}
QUICK_SUBSETS: dict[str, int | None] = {"fc": None, "unpool": 20000, "conv-pool": 10000, "conv": 2000}
