"""Predicting the class of your own image files with a classifier run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from convae.core.device import pick_device
from convae.core.errors import ConvaeError, DataError
from convae.run import CLASSIFIER, Run


def load_image_for(path: str | Path, input_shape: Sequence[int], *, invert: bool = False) -> torch.Tensor:
    """One image file as the model's input: float 1×C×H×W in [0, 1].

    Any PNG/JPEG/BMP size and mode is accepted: colour is converted to gray (or gray
    replicated to colour) and the image resized with antialiasing to the model's H×W.
    ``invert`` turns dark-on-light drawings into MNIST's light-on-dark.
    """
    from convae.data.files import image_for_model

    converted, _ = image_for_model(path, input_shape)
    x = converted.unsqueeze(0).float().div_(255)
    return 1.0 - x if invert else x


@torch.no_grad()
def predict_images(
    run_dir: str | Path | Run, paths: Sequence[str | Path], *, invert: bool = False, device: str = "auto",
    engine: Any = None,
) -> list[dict[str, Any]]:
    """Label and class probabilities for each image file (folders: every image inside), in order.

    ``engine`` (an exported classify graph, convae.applications.export.OnnxModel) computes the
    logits in place of the torch model.

    A file that cannot be read gets ``{"path", "error"}`` instead, and the others are still labelled.
    """
    from convae.data.files import find_image_files

    if not paths:
        raise ConvaeError("predict needs at least one image file or folder")
    target = pick_device(device) if engine is None else torch.device("cpu")
    run = Run.of(run_dir, kind=CLASSIFIER, verb="convae classify predict")
    model, config = engine or run.model(target), run.config
    shape = config["model"]["input_shape"]
    classes = config.get("classes") or [str(i) for i in range(config["model"]["n_classes"])]
    found = find_image_files(paths)
    if not found:
        raise ConvaeError("predict found no image files in " + ", ".join(map(str, paths)))
    results: list[dict[str, Any]] = []
    readable: list[tuple[dict[str, Any], torch.Tensor]] = []
    for item in found:
        entry: dict[str, Any] = {"path": str(item.path)}
        results.append(entry)
        try:
            if item.error:
                raise ConvaeError(item.error)
            readable.append((entry, load_image_for(item.path, shape, invert=invert)))
        except ConvaeError as error:
            entry["error"] = str(error).removeprefix(f"{item.path}: ")
    if not readable:  # nothing to label: one error, as for a single bad file
        first = results[0]
        raise DataError(f"{first['path']}: {first['error']}" if len(results) == 1 else
                        f"none of the {len(results)} file(s) could be read as an image "
                        f"(first: {first['path']}: {first['error']})")
    for start in range(0, len(readable), 256):
        chunk = readable[start:start + 256]
        probabilities = torch.softmax(model(torch.cat([x for _, x in chunk]).to(target)), dim=1).cpu()
        for (entry, _), probs in zip(chunk, probabilities):
            _label(entry, probs, classes)
    return results


def _label(entry: dict[str, Any], probs: torch.Tensor, classes: Sequence[str]) -> None:
    """Fill in one image's label, its probability and every class's probability."""
    index = int(probs.argmax())
    entry.update(label=str(classes[index]), class_index=index, probability=float(probs[index]),
                 probabilities={str(name): float(p) for name, p in zip(classes, probs)})


