"""Evaluating a classifier run: accuracy, loss, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from convae.core.atomic import write_json
from convae.core.device import pick_device
from convae.core.errors import DataError, RunError
from convae.data import Batches, ImageSet
from convae.run import CLASSIFIER, CONFIG, FIGURES, Run
from convae.run.splits import require_labels


@torch.no_grad()
def class_scores(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device
) -> tuple[float, torch.Tensor]:
    """(mean cross-entropy, predicted labels) over uint8 images, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    predictions = []
    for x, y in Batches(images, batch_size, shuffle=False, seed=0, device=device, labels=labels):
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        predictions.append(logits.argmax(1).cpu())
    model.train(was_training)
    return loss_sum / max(len(images), 1), torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)


def evaluate_model(
    model: torch.nn.Module,
    data: ImageSet,
    classes: Sequence[str],
    device: torch.device,
    run_dir: Path | None,
    *,
    split: str = "test",
    figure: bool = True,
) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix

    loss, predicted = class_scores(model, data.images, data.labels, 1024, device)
    truth = data.labels.cpu()
    matrix = confusion_matrix(truth.numpy(), predicted.numpy(), labels=list(range(len(classes))))
    per_class = {
        name: (float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None) for i, name in enumerate(classes)
    }
    result: dict[str, Any] = {
        "split": split,
        "images": len(data),
        "accuracy": float((predicted == truth).double().mean().item()),
        "loss": loss,
        "classes": list(classes),
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
        "confusion_rows": "true class",
        "confusion_columns": "predicted class",
    }
    if run_dir is not None:
        if figure:
            result["figure"] = str(confusion_figure(matrix.tolist(), classes, run_dir / FIGURES / f"confusion-{split}.png",
                                                    title=f"{split} accuracy {100 * result['accuracy']:.2f}%"))
        write_json(run_dir / f"eval-{split}.json", result)
    return result


def evaluate_classifier(
    run_dir: str | Path | Run,
    *,
    split: str = "test",
    data: ImageSet | None = None,
    device: str = "auto",
    figure: bool = True,
) -> dict[str, Any]:
    """Accuracy, loss, per-class accuracy and the confusion matrix of a classifier run.

    The images are the run's dataset split as its config describes, or ``data`` when
    given (Python use). Also writes ``RUN_DIR/eval-SPLIT.json`` and
    ``RUN_DIR/figures/confusion-SPLIT.png``.
    """
    target = pick_device(device)
    run = Run.of(run_dir, kind=CLASSIFIER, verb="convae classify evaluate")
    model, config = run.model(target), run.config
    if data is None:
        data = run.splits().split(split)
    else:
        require_labels(data)
        if tuple(data.shape) != tuple(config["model"]["input_shape"]):
            raise DataError(
                f"{data.name}: images are {'x'.join(map(str, data.shape))}, the model in {run.path} takes "
                f"{'x'.join(map(str, config['model']['input_shape']))}"
            )
    classes = config.get("classes") or data.classes
    if len(classes) != config["model"]["n_classes"]:
        raise RunError(f"{run.path / CONFIG}: {len(classes)} class names for {config['model']['n_classes']} outputs")
    return evaluate_model(model, data, classes, target, run.path, split=split, figure=figure)


def confusion_text(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """The confusion matrix as aligned text: rows are true classes, columns predictions."""
    labels = [str(c) for c in classes]
    width = max(max(len(label) for label in labels), max(len(str(v)) for row in matrix for v in row), 4)
    head = " " * (width + 1) + " ".join(label[:width].rjust(width) for label in labels) + "   ← predicted"
    lines = [head]
    for label, row in zip(labels, matrix):
        lines.append(label[:width].rjust(width) + " " + " ".join(str(v).rjust(width) for v in row))
    lines.append("↑ true class")
    return "\n".join(lines)


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = "") -> Path:
    """The confusion matrix as a PNG heat map with the counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from convae.viz import save_figure

    n = len(classes)
    fig, axis = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    data = torch.tensor(matrix, dtype=torch.float64)
    shown = data / data.sum(1, keepdim=True).clamp(min=1)
    axis.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            axis.text(j, i, str(int(data[i, j])), ha="center", va="center", fontsize=7,
                      color="white" if shown[i, j] > 0.5 else "black")
    axis.set_xticks(range(n), [str(c) for c in classes], rotation=45 if max(len(str(c)) for c in classes) > 2 else 0)
    axis.set_yticks(range(n), [str(c) for c in classes])
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    if title:
        axis.set_title(title)
    return save_figure(fig, path)




def load_classifier(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any]:
    """Shorthand for Python use: a classifier run's trained model in eval mode and its config."""
    run = Run.of(run_dir, kind=CLASSIFIER, verb="load_classifier")
    return run.model(device), run.config
