"""What a ``--task inspect`` run (DRAEM, convae.training.inspect) may be given, checked once.

Kept beside config.py rather than in it: an inspect run is a TrainConfig with a few rules
of its own (an inspection dataset, a DRAEM preset, a texture folder, no --noise or --patch),
and every one of them is a one-line error naming the flag to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convae.core.errors import ConvaeError
from convae.data.mvtec import is_mvtec
from convae.models import get_preset
from convae.models.draem import INSPECT_PRESETS


def inspection_dataset(dataset: str) -> bool:
    """``mvtec:PATH``, or a ``folder:PATH`` in that layout (train/good, test/, ground_truth/)."""
    return dataset.startswith("mvtec:") or (dataset.startswith("folder:") and is_mvtec(dataset[len("folder:"):]))


def needs_inspect_checks(config: Any) -> bool:
    return (config.task == "inspect" or config.model in INSPECT_PRESETS or config.anomaly_source is not None
            or config.crop is not None)


def check_inspect(config: Any) -> None:
    """Refuse what an inspect run cannot honour; make ``anomaly_source`` absolute (config.json keeps it)."""
    if config.task != "inspect":
        what, hint = f"{config.where('crop')} {config.crop}", "; --patch N trains other tasks on crops"
        if config.model in INSPECT_PRESETS:
            what, hint = f"--model {config.model}", ""
        elif config.anomaly_source is not None:
            what, hint = "--anomaly-source", ""
        raise ConvaeError(f"{what} is for --task inspect (DRAEM: learns from good parts with simulated defects), "
                          f"not --task {config.task}{hint}")
    if not inspection_dataset(config.dataset):
        raise ConvaeError(f"--task inspect needs an inspection dataset with a good split (mvtec:PATH holding "
                          f"train/good/, test/<type>/ and ground_truth/<defect>/), got {config.where('dataset')} "
                          f"{config.dataset}")
    if config.model not in INSPECT_PRESETS:
        raise ConvaeError(f"--task inspect trains {' or '.join(sorted(INSPECT_PRESETS))} (a reconstructive and a "
                          f"discriminative network), not --model {config.model}")
    for flag, value in (("--noise", config.noise), ("--patch", config.patch), ("--color-output", config.color_output)):
        if value is not None:
            raise ConvaeError(f"--task inspect takes no {flag} (it paints its own defects on whole parts)")
    if config.loss not in (None, "mse"):
        raise ConvaeError(f"--task inspect trains with DRAEM's L2 + SSIM + focal loss; drop "
                          f"{config.where('loss')} {config.loss}")
    if config.crop is None:  # the preset's (whole parts for both DRAEM presets)
        config.crop = int(get_preset(config.model).training.get("crop", 0))
    if config.val_fraction is not None and config.val_fraction <= 0:
        raise ConvaeError(f"--task inspect fits its thresholds on held-out good parts; "
                          f"{config.where('val_fraction')} must be above 0")
    if config.anomaly_source is not None:
        source = Path(config.anomaly_source).expanduser()
        if not source.is_dir():
            raise ConvaeError(f"--anomaly-source {config.anomaly_source}: "
                              f"{'not a folder' if source.exists() else 'no such folder'}")
        config.anomaly_source = str(source.resolve())
