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
from convae.core.outputs import check_output_file, check_output_folder, check_output_picture
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
    if csv_path is not None:
        check_output_file(Path(csv_path), "--csv", "detect-csv")
    if heatmaps is not None:
        check_output_folder(Path(heatmaps), "--heatmaps")
    run = open_detector_run(run_dir)
    files = find_image_files(inputs)
    if not files:
        raise ConvaeError("detect needs image files or folders to score")
    tile = run_tile(run)
    if tile is not None and engine is not None:
        raise ConvaeError("--onnx scores at the run's patch size only; a patch-trained run scores whole images "
                          "in tiles with its torch model (drop --onnx)")
    results, loaded = _read_files(files, run.config.input_shape, keep_size=tile is not None)
    if engine is not None:
        exported = engine.exported
        threshold = Threshold(value=float(exported.threshold), score=str(exported.score_kind), method="exported",
                              fitted_on=f"inside {exported.path}", heatmap_scale=exported.heatmap_scale,
                              pixel_threshold=exported.pixel_threshold)
    elif threshold is None:  # after reading the files: no fitting when there is nothing to score
        threshold = resolve_threshold(run, value=threshold_value, score=score, device=device, log=log,
                                      **fit_options)
    target = pick_device(device) if engine is None else torch.device("cpu")
    model = run.model(target) if engine is None else None
    code_index = run_code_index(run, model, device=target, log=log) if model and threshold.score == HYBRID else None
    scorer = _Scorer(threshold, Path(heatmaps) if heatmaps is not None else None, target)
    if tile is not None:
        for position, image in loaded:
            scorer.tiled(results[position], model, image, tile)
    else:
        images = torch.stack([image for _, image in loaded])
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(target).float().div_(255)
            found = error_maps(model, x, threshold.score, code_index) if engine is None else engine.detect(x)
            scorer.batch([results[p] for p, _ in loaded[start:start + batch_size]], x, *found)
    if csv_path is not None:
        write_csv(Path(csv_path), results, threshold)
    return Detection(results, threshold, Path(csv_path) if csv_path else None, scorer.heat_dir)


def _read_files(files: Sequence[Any], input_shape: tuple[int, int, int],
                keep_size: bool) -> tuple[list[ImageResult], list[tuple[int, torch.Tensor]]]:
    """A result per file, and (position, image) for those that read; a tiled run keeps their size."""
    results: list[ImageResult] = []
    loaded: list[tuple[int, torch.Tensor]] = []
    for found in files:
        result = ImageResult(path=str(found.path))
        try:
            if found.error:
                raise DataError(f"{found.path}: {found.error}")
            image, result.note = image_for_model(found.path, input_shape, keep_size=keep_size)
            loaded.append((len(results), image))
        except ConvaeError as error:
            result.note = str(error)
        results.append(result)
    if not loaded:
        raise ConvaeError(f"none of the {len(files)} file(s) could be read as an image (first: {results[0].note})")
    return results, loaded


class _Scorer:
    """Scores and verdicts against one threshold, and each image's heatmaps when asked for."""

    def __init__(self, threshold: Threshold, heat_dir: Path | None, target: torch.device) -> None:
        self.threshold, self.heat_dir, self.target = threshold, heat_dir, target
        self.names = UniqueNames()

    @staticmethod
    def _refuse_foreign(*paths: Path) -> None:
        """Checked before the first picture of an image is drawn: nothing of the user's is overwritten."""
        for path in paths:
            check_output_picture(path)

    def _judge(self, result: ImageResult, score: float) -> str:
        result.score = score
        result.verdict = ANOMALOUS if score > self.threshold.value else NORMAL
        return ">" if result.verdict == ANOMALOUS else "<="

    def tiled(self, result: ImageResult, model: Any, image: torch.Tensor, tile: tuple[int, int]) -> None:
        """A whole image at its own size, in tiles: the peak of its blurred error map."""
        t = self.threshold
        error, _ = tiled_error_map(model, image, t.score, tile, self.target)
        sign = self._judge(result, peak_score(error))
        if self.heat_dir is not None:
            destination = self.heat_dir / f"{self.names.take(Path(result.path).stem)}.png"
            self._refuse_foreign(destination, destination.with_name(f"{destination.stem}_mask.png"))
            result.heatmap = str(write_overlay(
                destination, image.float().div(255), error,
                scale=t.heatmap_scale or float(error.max().clamp(min=1e-8)),
                title=f"{Path(result.path).name}: {t.score} peak {result.score:.4g} {sign} {t.value:.4g}, "
                      f"{result.verdict}",
                mask_level=t.pixel_threshold,
            ))

    def batch(self, results: list[ImageResult], x: torch.Tensor, scores: torch.Tensor, maps: torch.Tensor,
              outputs: torch.Tensor) -> None:
        """A batch at the model's size; a resized image also gets its map drawn back on the original."""
        if not bool(torch.isfinite(scores).all()):
            raise ConvaeError("the model produced NaN or Inf reconstructions; its scores cannot be used")
        t = self.threshold
        scale = t.heatmap_scale or float(maps.max().clamp(min=1e-8))
        for offset, result in enumerate(results):
            sign = self._judge(result, float(scores[offset]))
            if self.heat_dir is None:
                continue
            name = self.names.take(Path(result.path).stem)
            self._refuse_foreign(*(self.heat_dir / f"{name}{end}" for end in (".png", "_overlay.png",
                                                                             "_overlay_mask.png")))
            result.heatmap = str(write_heatmap(
                self.heat_dir / f"{name}.png", x[offset].cpu(), outputs[offset].clamp(0, 1).cpu(), maps[offset].cpu(),
                scale=scale, caption=f"{t.score} {result.score:.4g} {sign} {t.value:.4g}: {result.verdict}",
            ))
            original = read_image(result.path)
            if tuple(original.shape[1:]) != tuple(x.shape[-2:]):  # resized for the model: the map goes back
                error = F.interpolate(maps[offset][None, None].float().cpu(), size=tuple(original.shape[1:]),
                                      mode="bilinear", align_corners=False)[0, 0]
                write_overlay(self.heat_dir / f"{name}_overlay.png", original.float().div(255), error, scale=scale,
                              title=f"{Path(result.path).name}: {t.score} {result.score:.4g}, "
                                    f"{result.verdict} (map from {x.shape[-2]}×{x.shape[-1]}, upsampled)",
                              mask_level=t.pixel_threshold)


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


