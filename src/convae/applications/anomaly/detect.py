"""``convae detect`` on files and folders: a score and a verdict per image, a CSV and heatmaps.

Images of another size or channel count are converted (and say so); unreadable files
are reported by name and the others are still scored. A patch-trained run scores every
image at its own size in tiles; with ``heatmaps`` each image gets its error map over it at
its own resolution, with a colour bar, and the predicted defect mask (pixels above the
threshold's ``pixel_threshold``, fitted on normal validation images).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from convae.applications.anomaly.figures import write_heatmap, write_overlay
from convae.applications.anomaly.runs import open_detector_run, run_tile
from convae.applications.anomaly.scores import HYBRID, error_maps, peak_score, run_code_index, tiled_error_map
from convae.applications.anomaly.threshold import Threshold, resolve_threshold
from convae.core.atomic import atomic_write_text
from convae.core.device import pick_device
from convae.core.errors import ConvaeError, DataError
from convae.core.images import UniqueNames
from convae.data.files import find_image_files, image_for_model, read_image
from convae.run import Run

NORMAL, ANOMALOUS, UNREADABLE = "normal", "anomalous", "unreadable"


@dataclass
class ImageResult:
    path: str
    score: float | None = None
    verdict: str = UNREADABLE
    note: str = ""
    heatmap: str | None = None


@dataclass
class Detection:
    results: list[ImageResult]
    threshold: Threshold
    csv: Path | None = None
    heatmaps: Path | None = None

    @property
    def unreadable(self) -> list[ImageResult]:
        return [r for r in self.results if r.verdict == UNREADABLE]

    @property
    def anomalous(self) -> list[ImageResult]:
        return [r for r in self.results if r.verdict == ANOMALOUS]


@torch.no_grad()
def detect_paths(
    run_dir: str | Path | Run,
    inputs: Sequence[str | Path],
    *,
    threshold: Threshold | None = None,
    threshold_value: float | None = None,
    score: str | None = None,
    csv_path: str | Path | None = None,
    heatmaps: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 256,
    log: Callable[[str], None] | None = None,
    engine: Any = None,
    **fit_options: Any,
) -> Detection:
    """Score image files and folders with a run; unreadable files are reported, never fatal.

    Returns every file's score and verdict in input order. ``csv_path`` gets one row per
    file (unreadable ones included, with the reason); ``heatmaps`` gets one PNG per scored
    image: the input, its reconstruction and the error map over the input. ``engine`` (an
    exported detect graph, convae.applications.export.OnnxModel) scores in place of the torch
    model, with the threshold and score kind that are inside it.
    """
    run = open_detector_run(run_dir)
    files = find_image_files(inputs)
    if not files:
        raise ConvaeError("detect needs image files or folders to score")
    input_shape = run.config.input_shape
    tile = run_tile(run)
    if tile is not None and engine is not None:
        raise ConvaeError("--onnx scores at the run's patch size only; a patch-trained run scores whole images "
                          "in tiles with its torch model (drop --onnx)")
    results: list[ImageResult] = []
    loaded: list[tuple[int, torch.Tensor]] = []
    for found in files:
        result = ImageResult(path=str(found.path))
        try:
            if found.error:
                raise DataError(f"{found.path}: {found.error}")
            if tile is not None:  # whole images at their own size, in tiles; only the channels change
                image, result.note = image_for_model(found.path, input_shape, keep_size=True)
            else:
                image, result.note = image_for_model(found.path, input_shape)
            loaded.append((len(results), image))
        except ConvaeError as error:
            result.note = str(error)
        results.append(result)
    if not loaded:
        raise ConvaeError(f"none of the {len(files)} file(s) could be read as an image (first: {results[0].note})")
    if engine is not None:
        exported = engine.exported
        threshold = Threshold(value=float(exported.threshold), score=str(exported.score_kind), method="exported",
                              fitted_on=f"inside {exported.path}", heatmap_scale=exported.heatmap_scale)
    elif threshold is None:  # after reading the files: no fitting when there is nothing to score
        threshold = resolve_threshold(run, value=threshold_value, score=score, device=device, log=log,
                                      **fit_options)
    target = pick_device(device) if engine is None else torch.device("cpu")
    model = run.model(target) if engine is None else None
    code_index = run_code_index(run, model, device=target, log=log) if model and threshold.score == HYBRID else None
    heat_dir = Path(heatmaps) if heatmaps is not None else None
    names = UniqueNames()
    if tile is not None:
        for position, image in loaded:
            result = results[position]
            error, output = tiled_error_map(model, image, threshold.score, tile, target)
            result.score = peak_score(error)
            result.verdict = ANOMALOUS if result.score > threshold.value else NORMAL
            if heat_dir is not None:
                result.heatmap = str(write_overlay(
                    heat_dir / f"{names.take(Path(result.path).stem)}.png", image.float().div(255), error,
                    scale=threshold.heatmap_scale or float(error.max().clamp(min=1e-8)),
                    title=f"{Path(result.path).name}: {threshold.score} peak {result.score:.4g} "
                          f"{'>' if result.verdict == ANOMALOUS else '<='} {threshold.value:.4g}, {result.verdict}",
                    mask_level=threshold.pixel_threshold,
                ))
        loaded = []
    images = torch.stack([image for _, image in loaded]) if loaded else torch.zeros(0)
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(target).float().div_(255)
        scores, maps, outputs = error_maps(model, x, threshold.score, code_index) if engine is None else engine.detect(x)
        if not bool(torch.isfinite(scores).all()):
            raise ConvaeError("the model produced NaN or Inf reconstructions; its scores cannot be used")
        for offset in range(x.shape[0]):
            result = results[loaded[start + offset][0]]
            result.score = float(scores[offset])
            result.verdict = ANOMALOUS if result.score > threshold.value else NORMAL
            if heat_dir is not None:
                name = names.take(Path(result.path).stem)
                result.heatmap = str(write_heatmap(
                    heat_dir / f"{name}.png", x[offset].cpu(), outputs[offset].clamp(0, 1).cpu(), maps[offset].cpu(),
                    scale=threshold.heatmap_scale or float(maps.max().clamp(min=1e-8)),
                    caption=f"{threshold.score} {result.score:.4g} {'>' if result.verdict == ANOMALOUS else '<='} "
                            f"{threshold.value:.4g}: {result.verdict}",
                ))
                original = read_image(result.path)
                if tuple(original.shape[1:]) != tuple(x.shape[-2:]):  # resized for the model: the map goes back
                    error = F.interpolate(maps[offset][None, None].float().cpu(), size=tuple(original.shape[1:]),
                                          mode="bilinear", align_corners=False)[0, 0]
                    write_overlay(heat_dir / f"{name}_overlay.png", original.float().div(255), error,
                                  scale=threshold.heatmap_scale or float(maps.max().clamp(min=1e-8)),
                                  title=f"{Path(result.path).name}: {threshold.score} {result.score:.4g}, "
                                        f"{result.verdict} (map from {x.shape[-2]}×{x.shape[-1]}, upsampled)",
                                  mask_level=threshold.pixel_threshold)
    detection = Detection(results, threshold, Path(csv_path) if csv_path else None, heat_dir)
    if csv_path is not None:
        write_csv(Path(csv_path), results, threshold)
    return detection


CSV_COLUMNS = ("path", "score", "score_kind", "threshold", "verdict", "note", "heatmap")


def write_csv(path: Path, results: Sequence[ImageResult], threshold: Threshold) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in results:
        writer.writerow([r.path, "" if r.score is None else f"{r.score:.8g}", threshold.score,
                         f"{threshold.value:.8g}", r.verdict, r.note, r.heatmap or ""])
    atomic_write_text(path, buffer.getvalue())
    return path


