"""Anomaly scores: how badly a run reconstructs an image, per image and per pixel.

Per image ``mse`` (mean squared error per pixel), ``l1`` (mean absolute error per pixel)
or ``ssim`` (1 − SSIM, the default: it ranks anomalies best on MNIST and Fashion-MNIST,
see benchmarks/anomaly.py), and per pixel the matching error map (squared error, absolute
error, 1 − local SSIM). ``hybrid`` adds the code's distance to the normal training codes
(convae.applications.anomaly.index). SSIM comes from torchmetrics.

A patch-trained run (``--patch``) sees whole images of any size in overlapping tiles
(convae.applications.tiles): its error map is at the image's own resolution, and an
image's score is the peak of that map smoothed by a Gaussian of ``PEAK_SIGMA`` px, so one
small defect on a large part counts rather than being averaged away.

A ``--task inspect`` run (DRAEM) adds ``segment``, its default: the map is the
discriminative network's defect probability and the image's score the peak of that map
after DRAEM's 21×21 mean pooling (convae.models.draem.pooled_peak). Its reconstruction
still gives the other kinds, for comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from convae.applications.anomaly.index import (
    CodeIndex,
    build_code_index,
    cached_code_index,
    save_code_index,
    tensor_code,
)
from convae.applications.anomaly.runs import normal_splits, open_detector_run
from convae.applications.tiles import apply_tiled
from convae.core.errors import ConvaeError
from convae.data import Batches
from convae.metrics import ssim_map
from convae.models.draem import pooled_peak
from convae.run import Run

PIXEL_KINDS = ("ssim", "mse", "l1")  # the mean of an error map; need nothing but the model
HYBRID = "hybrid"  # ssim plus the code's distance to the normal training codes (needs a CodeIndex)
SCORE_KINDS = (*PIXEL_KINDS, HYBRID)  # every reconstruction-error kind
SEGMENT = "segment"  # a --task inspect run's defect map (needs its discriminative network)
KNOWN_KINDS = (*SCORE_KINDS, SEGMENT)
DEFAULT_SCORE = "ssim"
#: σ in pixels of the smoothing before a tiled map's peak becomes the image's score.
PEAK_SIGMA = 4.0
Tile = tuple[int, int]


def check_score_kind(kind: str) -> str:
    if kind not in KNOWN_KINDS:
        raise ConvaeError(f"--score must be one of {', '.join(KNOWN_KINDS)}, got {kind!r}")
    return kind


def default_score(run: Run) -> str:
    """``segment`` for an inspect run (DRAEM's defect map), else ``ssim``."""
    return SEGMENT if run.config.task == "inspect" else DEFAULT_SCORE


def kind_maps(model: torch.nn.Module, x: torch.Tensor, kind: str,
              code: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the model's output N×C×H×W, the score kind's map N×H×W) of a float batch."""
    if kind == SEGMENT:
        if not hasattr(model, "defect_map"):
            raise ConvaeError("the segment score is a --task inspect run's defect map; this run has none "
                              "(use --score ssim, mse, l1 or hybrid)")
        maps, output = model.defect_map(x)
        return output.float(), maps
    output = reconstruct(model, x, code=code)
    return output, maps_from(output, x, kind)


def map_scores(maps: torch.Tensor, kind: str) -> torch.Tensor:
    """The image scores (N) of a batch's maps: the pooled peak of a defect map, else the mean error."""
    return pooled_peak(maps) if kind == SEGMENT else maps.flatten(1).mean(1)


def _no_hybrid_tiles(kinds: Sequence[str], tile: Tile | None) -> None:
    if tile is not None and HYBRID in kinds:
        raise ConvaeError("a patch-trained run scores whole images in tiles, which have no single code for the "
                          "hybrid score; use --score ssim, mse or l1")


@torch.no_grad()
def tiled_error_map(model: torch.nn.Module, image: torch.Tensor, kind: str, tile: Tile,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(error map H×W, reconstruction C×H×W in [0, 1]) of one uint8 image of any size, in tiles."""
    _no_hybrid_tiles((kind,), tile)

    def both(x: torch.Tensor) -> torch.Tensor:
        output = reconstruct(model, x)
        return torch.cat([output.clamp(0, 1), maps_from(output, x, kind)[:, None]], 1)

    blended = apply_tiled(both, image, tile, device=device)
    return blended[-1], blended[:-1]


def peak_score(error_map: torch.Tensor) -> float:
    """The score of a tiled image: the largest value of its error map after a Gaussian blur of PEAK_SIGMA px."""
    from torchvision.transforms.functional import gaussian_blur

    radius = int(3 * PEAK_SIGMA)
    size = min(2 * radius + 1, (min(error_map.shape[-2:]) // 2) * 2 - 1)
    smooth = gaussian_blur(error_map[None, None].float(), [size, size], [PEAK_SIGMA, PEAK_SIGMA]) if size >= 3 \
        else error_map
    return float(smooth.max())


def _tiled_scores(model: torch.nn.Module, images: torch.Tensor, kind: str, tile: Tile,
                  device: torch.device | str, with_maps: bool) -> tuple[np.ndarray, torch.Tensor | None]:
    scores, maps = [], []
    for image in images:
        error, _ = tiled_error_map(model, image, kind, tile, device)
        scores.append(peak_score(error))
        if with_maps:
            maps.append(error)
    values = np.asarray(scores, dtype=np.float64)
    h, w = images.shape[-2:]
    return values, (torch.stack(maps) if maps else torch.zeros(0, h, w)) if with_maps else None


def _needs_index(kinds: Sequence[str], index: CodeIndex | None) -> None:
    if HYBRID in kinds and index is None:
        raise ConvaeError("the hybrid score needs the run's code index (convae.applications.anomaly.run_code_index)")


@torch.no_grad()
def error_maps(model: torch.nn.Module, x: torch.Tensor, kind: str = DEFAULT_SCORE,
               index: CodeIndex | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scores N, error maps N×H×W, reconstructions N×C×H×W) for a float batch in [0, 1].

    The score of an image is the mean of its error map: ``mse`` the squared error and
    ``l1`` the absolute error per pixel (averaged over channels, on the raw output, as
    :func:`convae.metrics.reconstruction_metrics` does), ``ssim`` 1 − the local SSIM map
    (Gaussian window, data range 1, output clipped to [0, 1]; its mean is torchmetrics'
    SSIM of the image, so the score equals 1 − :func:`convae.metrics.batch_ssim`). ``hybrid``
    (needs ``index``) draws the ``ssim`` map and adds the code distance to its score
    (:meth:`CodeIndex.combine`).
    """
    check_score_kind(kind)
    _needs_index((kind,), index)
    code = tensor_code(model, x) if kind == HYBRID else None
    output, maps = kind_maps(model, x, kind, code)
    scores = map_scores(maps, kind)
    if code is not None:
        distances = index.distances(code.flatten(1).float())
        scores = torch.from_numpy(index.combine(scores.double().cpu().numpy(), distances)).to(x.device)
    return scores, maps, output


def reconstruct(model: torch.nn.Module, x: torch.Tensor, *, code: torch.Tensor | None = None) -> torch.Tensor:
    """The model's output for ``x``; decoded from ``code`` when the caller already encoded ``x``
    (the hybrid score needs the code too, and the encoder need not run twice)."""
    output = (model(x) if code is None else model.decode(code)).float()
    if output.shape != x.shape:
        raise ConvaeError(
            f"the model maps {tuple(x.shape[1:])} to {tuple(output.shape[1:])}; anomaly scores need a "
            "reconstruction of the input (a reconstruct or denoise run)"
        )
    return output


def maps_from(output: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """The per-pixel error map (N×H×W) of one score kind (``hybrid``: the ``ssim`` map)."""
    x = x.float()
    if kind == "mse":
        return (output - x).pow(2).mean(1)
    if kind == "l1":
        return (output - x).abs().mean(1)
    if kind not in ("ssim", HYBRID):
        check_score_kind(kind)
    return 1.0 - ssim_map(output.clamp(0, 1), x).mean(1)


@torch.no_grad()
def score_kinds(
    model: torch.nn.Module,
    images: torch.Tensor,
    kinds: Sequence[str] = PIXEL_KINDS,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    index: CodeIndex | None = None,
    tile: Tile | None = None,
) -> dict[str, np.ndarray]:
    """Scores of several kinds from one pass of the model: {kind: float64 array}.

    ``hybrid`` needs ``index``, the run's :class:`CodeIndex` (:func:`run_code_index`).
    ``tile``: a patch run's tile size; images of any size are then scored in tiles.
    """
    for kind in kinds:
        check_score_kind(kind)
    _no_hybrid_tiles(kinds, tile)
    if tile is not None:
        model.eval()
        return {kind: _finite(_tiled_scores(model, images, kind, tile, device, False)[0]) for kind in kinds}
    _needs_index(kinds, index)
    model.eval()
    pixel_kinds = {"ssim" if kind == HYBRID else kind for kind in kinds}
    parts: dict[str, list[torch.Tensor]] = {kind: [] for kind in pixel_kinds}
    codes: list[torch.Tensor] = []
    for x in Batches(images, batch_size, shuffle=False, seed=0, device=device):
        code = tensor_code(model, x) if HYBRID in kinds else None
        output = reconstruct(model, x, code=code) if pixel_kinds - {SEGMENT} else None
        for kind in pixel_kinds:
            maps = kind_maps(model, x, kind)[1] if kind == SEGMENT else maps_from(output, x, kind)
            parts[kind].append(map_scores(maps, kind).double().cpu())
        if code is not None:
            codes.append(code.flatten(1).float().cpu())
    result = {kind: torch.cat(v).numpy() if v else np.zeros(0) for kind, v in parts.items()}
    if HYBRID in kinds:
        distances = index.distances(torch.cat(codes)) if codes else np.zeros(0)
        result[HYBRID] = index.combine(result["ssim"], distances)
    return {kind: _finite(result[kind]) for kind in kinds}


def _finite(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise ConvaeError("the model produced NaN or Inf reconstructions; its scores cannot be used")
    return values


@torch.no_grad()
def score_images(
    model: torch.nn.Module,
    images: torch.Tensor,
    kind: str = DEFAULT_SCORE,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    with_maps: bool = False,
    index: CodeIndex | None = None,
    tile: Tile | None = None,
) -> np.ndarray | tuple[np.ndarray, torch.Tensor]:
    """Anomaly score of every image of a uint8 N×C×H×W tensor (float64 array, higher = more anomalous).

    ``with_maps`` also returns the per-pixel error maps (float32 N×H×W, on the CPU).
    ``tile``: a patch run's tile size (scores are then map peaks, see the module docstring).
    """
    if not with_maps:
        return score_kinds(model, images, (kind,), batch_size=batch_size, device=device, index=index, tile=tile)[kind]
    if tile is not None:
        _no_hybrid_tiles((kind,), tile)
        model.eval()
        values, maps = _tiled_scores(model, images, kind, tile, device, True)
        assert maps is not None
        return _finite(values), maps
    _needs_index((kind,), index)
    model.eval()
    scores, maps = [], []
    for x in Batches(images, batch_size, shuffle=False, seed=0, device=device):
        s, m, _ = error_maps(model, x, kind, index)
        scores.append(s.double().cpu())
        maps.append(m.cpu())
    values = torch.cat(scores).numpy() if scores else np.zeros(0)
    if not np.isfinite(values).all():
        raise ConvaeError("the model produced NaN or Inf reconstructions; its scores cannot be used")
    h, w = images.shape[-2:]
    return values, (torch.cat(maps) if maps else torch.zeros(0, h, w))


def run_code_index(run_dir: str | Path | Run, model: torch.nn.Module | None = None, *,
                   device: str | torch.device = "cpu", batch_size: int = 256,
                   log: Callable[[str], None] | None = None) -> CodeIndex:
    """The run's :class:`CodeIndex` for the hybrid score: cached, or built from its training data.

    The codes are those of the normal training images the model learnt from; the
    standardisation comes from the held-out normal validation images, as for thresholds.
    """
    run = open_detector_run(run_dir)
    if model is None:
        model = run.model(device)
    cached = cached_code_index(run.path, model)
    if cached is not None:
        return cached
    splits = normal_splits(run)
    val = splits.val
    assert val is not None
    validation_ssim = score_images(model, val.images, "ssim", batch_size=batch_size, device=device)
    index = build_code_index(model, splits.train.images, val.images, validation_ssim, batch_size=batch_size,
                             device=device)
    path = save_code_index(run.path, index)
    if log:
        log(f"indexed the codes of {len(index.codes)} normal training images in {path}")
    return index
