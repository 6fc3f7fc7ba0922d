"""Predicting the class of your own image files with a classifier run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from convae.core.device import pick_device
from convae.core.errors import ConvaeError
from convae.run import CLASSIFIER, Run


def load_image_for(path: str | Path, input_shape: Sequence[int], *, invert: bool = False) -> torch.Tensor:
    """One image file as the model's input: float 1×C×H×W in [0, 1].

    Any PNG/JPEG/BMP size and mode is accepted: colour is converted to gray (or gray
    replicated to colour) and the image resized with antialiasing to the model's H×W.
    ``invert`` turns dark-on-light drawings into MNIST's light-on-dark.
    """
    from convae.data.files import image_for_model  # noqa: PLC0415

    converted, _ = image_for_model(path, input_shape)
    x = converted.unsqueeze(0).float().div_(255)
    return 1.0 - x if invert else x


@torch.no_grad()
def predict_images(
    run_dir: str | Path, paths: Sequence[str | Path], *, invert: bool = False, device: str = "auto"
) -> list[dict[str, Any]]:
    """Label and class probabilities for each image file, in the order given."""
    if not paths:
        raise ConvaeError("predict needs at least one image file")
    target = pick_device(device)
    run = Run.open(run_dir, kind=CLASSIFIER, verb="convae classify predict")
    model, config = run.model(target), run.config
    shape = config["model"]["input_shape"]
    classes = config.get("classes") or [str(i) for i in range(config["model"]["n_classes"])]
    batch = torch.cat([load_image_for(p, shape, invert=invert) for p in paths]).to(target)
    probabilities = torch.softmax(model(batch), dim=1).cpu()
    results = []
    for path, probs in zip(paths, probabilities):
        index = int(probs.argmax())
        results.append(
            {
                "path": str(path),
                "label": str(classes[index]),
                "class_index": index,
                "probability": float(probs[index]),
                "probabilities": {str(name): float(p) for name, p in zip(classes, probs)},
            }
        )
    return results


