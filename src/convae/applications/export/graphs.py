"""The torch modules that become ONNX graphs: one per export kind, each with named outputs.

``reconstruct`` and ``classify`` are the run's model itself. Every graph takes float32 N×C×H×W images in [0, 1] (``decode`` takes codes) and returns
plain tensors in a fixed order, so the exporter can name them. ``detect`` holds all of
``convae detect``: the reconstruction, the per-pixel map, the image score, and the verdict
against the fitted threshold, a constant of the graph like the hybrid score's normal codes
and standardisation.
"""

from __future__ import annotations

import torch
from torch import nn

from convae.applications.anomaly.index import CodeIndex
from convae.applications.anomaly.scores import HYBRID, kind_maps, map_scores, maps_from
from convae.applications.anomaly.threshold import Threshold
from convae.models import SwitchedCode


def switch_names(count: int) -> list[str]:
    """Names of the pooling switches a switched code carries (innermost pooling first)."""
    return ["switches"] if count == 1 else [f"switches_{i}" for i in range(count)]


class EncodeGraph(nn.Module):
    """``code``, then the pooling switches of an unpooling preset (int64), innermost first."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        code = self.model.encode(images)
        if isinstance(code, SwitchedCode):
            return (code.values, *(indices for indices, _ in code.switches))
        return (code,)


class DecodeGraph(nn.Module):
    """The decoder alone: ``code`` (and the switches ``encode`` gave) in, ``reconstruction`` out.

    The pre-pool sizes of the switches are fixed by the run's input shape, so they are
    constants here rather than inputs.
    """

    def __init__(self, model: nn.Module, switch_sizes: list[torch.Size]) -> None:
        super().__init__()
        self.model = model
        self.switch_sizes = [tuple(int(v) for v in size) for size in switch_sizes]

    def forward(self, code: torch.Tensor, *switches: torch.Tensor) -> torch.Tensor:
        if self.switch_sizes:
            code = SwitchedCode(code, tuple(zip(switches, self.switch_sizes)))  # type: ignore[assignment]
        return self.model.decode(code)


class DetectGraph(nn.Module):
    """``reconstruction``, ``anomaly_map``, ``score`` and ``anomalous`` (score > threshold) per image."""

    def __init__(self, model: nn.Module, threshold: Threshold, index: CodeIndex | None = None) -> None:
        super().__init__()
        self.model, self.kind = model, threshold.score
        self.register_buffer("threshold", torch.tensor(threshold.value, dtype=torch.float64))
        self.hybrid = threshold.score == HYBRID
        if self.hybrid:
            assert index is not None
            # float64: |q|² − 2q·c + |c|² cancels badly in float32 for codes far from the origin
            codes = torch.from_numpy(index.codes).double()
            self.register_buffer("codes", codes)
            self.register_buffer("code_norms", codes.pow(2).sum(1))
            self.register_buffer("center", torch.from_numpy(index.center).double())
            self.register_buffer("scale", torch.from_numpy(index.scale).double())
            self.index = index  # its standardisation (CodeIndex.combine) becomes constants of the graph

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.hybrid:
            code = self.model.encode(images)
            output = self.model.decode(code).float()
            maps = maps_from(output, images, self.kind)
        else:  # a reconstruction error, or an inspect run's segmentation (both networks in the graph)
            output, maps = kind_maps(self.model, images, self.kind)
        score = map_scores(maps, self.kind)
        if self.hybrid:
            score = self._hybrid(score.double(), code.flatten(1).double()).float()
        return output, maps, score, score.double() > self.threshold

    def _hybrid(self, ssim_score: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """CodeIndex.combine of 1 − SSIM and the mean distance to the nearest normal codes
        (CodeIndex.distances' k-nearest search, written as matrix products and a top-k)."""
        q = (code - self.center) / self.scale
        squared = q.pow(2).sum(1, keepdim=True) - 2 * q @ self.codes.t() + self.code_norms.unsqueeze(0)
        nearest = torch.topk(squared.clamp(min=0), self.index.neighbours, dim=1, largest=False).values
        return self.index.combine(ssim_score, nearest.sqrt().mean(1))
