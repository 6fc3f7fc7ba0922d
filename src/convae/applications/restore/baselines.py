"""The classical baselines a restoration run is measured against.

Denoising: the better of a Gaussian and a median filter, its one parameter chosen on
validation images. Colorization: gray plus the mean colour of each gray level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from convae.applications.restore.corrupted import VAL_TAG, corrupted_batches
from convae.core.errors import ConvaeError
from convae.core.images import luma
from convae.data import Batches
from convae.data.corrupt import Corruption
from convae.metrics import psnr_from_mse
from convae.models.heads import smooth

#: The filter parameters the denoising baseline chooses from (on the validation split).
GAUSSIAN_SIGMAS = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8)
MEDIAN_SIZES = (3, 5, 7)
#: Gray levels of the colorization baseline's lookup table.
COLOUR_LEVELS = 64

Filter = Callable[[torch.Tensor], torch.Tensor]


def gaussian_filter(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of N×C×H×W, radius ceil(3σ), edges replicated (a new tensor even at σ 0)."""
    return smooth(x, sigma) if sigma > 0 else x.clone()


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Median of each size×size window (size odd), per channel, edges replicated."""
    if size % 2 == 0 or size < 1:
        raise ConvaeError(f"median filter size must be odd and positive, got {size}")
    if size == 1:
        return x.clone()
    if x.device.type == "cpu":  # scipy's C loop is several times faster than sorting patches
        from scipy.ndimage import median_filter as scipy_median

        array = x.detach().contiguous().numpy()
        return torch.from_numpy(scipy_median(array, size=(1, 1, size, size), mode="nearest"))
    return _median_windows(x, size)


def _median_windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """The same median in torch (any device): the size² shifted views, stacked."""
    h, w = x.shape[-2:]
    pad = size // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    windows = torch.stack([padded[..., i : i + h, j : j + w] for i in range(size) for j in range(size)], dim=2)
    return windows.median(dim=2).values


@dataclass(frozen=True)
class DenoiseFilter:
    """One classical denoiser: a Gaussian blur of ``param`` σ or a median of ``param``×``param``."""

    family: str
    param: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.family == "gaussian":
            return gaussian_filter(x, float(self.param))
        return median_filter(x, int(self.param))

    def __str__(self) -> str:
        if self.family == "gaussian":
            return f"Gaussian filter σ={self.param:g}"
        return f"median filter {int(self.param)}×{int(self.param)}"


def denoise_candidates() -> list[DenoiseFilter]:
    return [DenoiseFilter("gaussian", s) for s in GAUSSIAN_SIGMAS] + [DenoiseFilter("median", k) for k in MEDIAN_SIZES]


class ColourTable:
    """Colorization baseline: gray + the mean colour offset of that gray level.

    Fitted on clean RGB images: for each of ``levels`` gray levels, the mean of
    (R−Y, G−Y, B−Y) over the pixels whose luma Y falls in that level. Levels with no pixels
    get offset 0 (they stay gray).
    """

    def __init__(self, levels: int = COLOUR_LEVELS) -> None:
        self.levels = levels
        self.sums = torch.zeros(levels, 3, dtype=torch.float64)
        self.counts = torch.zeros(levels, dtype=torch.float64)
        self.images = 0

    def _bins(self, y: torch.Tensor) -> torch.Tensor:
        return (y * self.levels).long().clamp_(0, self.levels - 1)

    def fit(self, x: torch.Tensor) -> "ColourTable":
        y = luma(x)
        bins = self._bins(y).flatten()
        offsets = (x[:, :3] - y).permute(0, 2, 3, 1).reshape(-1, 3).double().cpu()
        self.sums.index_add_(0, bins.cpu(), offsets)
        self.counts.index_add_(0, bins.cpu(), torch.ones(len(bins), dtype=torch.float64))
        self.images += x.shape[0]
        return self

    @property
    def offsets(self) -> torch.Tensor:
        return (self.sums / self.counts.clamp(min=1).unsqueeze(1)).float()

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        """1-channel gray N×1×H×W → RGB N×3×H×W."""
        table = self.offsets.to(y.device)
        offset = table[self._bins(y[:, 0])].permute(0, 3, 1, 2)
        return (y + offset).clamp_(0, 1)

    def __str__(self) -> str:
        return f"mean colour of each of {self.levels} gray levels"


@torch.no_grad()
def choose_denoise_filter(
    val: torch.Tensor, corruption: Corruption, seed: int, chunk: int, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """Score every candidate filter on the (corrupted) validation images; the best PSNR wins.

    Returns ``{"best": DenoiseFilter, "families": {family: {"param", "val_psnr"}}, "val_psnr": {name: psnr}}``.
    """
    candidates = denoise_candidates()
    sse = torch.zeros(len(candidates), dtype=torch.float64)
    count = 0
    for clean, noisy in corrupted_batches(val, corruption, seed, chunk, device, tag=VAL_TAG):
        for i, candidate in enumerate(candidates):
            sse[i] += (candidate(noisy) - clean).pow(2).flatten(1).mean(1).double().sum().cpu()
        count += clean.shape[0]
    psnr = [psnr_from_mse(v / max(count, 1)) for v in sse.tolist()]
    families: dict[str, dict[str, Any]] = {}
    for candidate, value in zip(candidates, psnr):
        best = families.get(candidate.family)
        if best is None or value > best["val_psnr"]:
            families[candidate.family] = {"param": candidate.param, "val_psnr": value}
    best_index = max(range(len(candidates)), key=lambda i: psnr[i])
    return {"best": candidates[best_index], "families": families,
            "val_psnr": {str(c): p for c, p in zip(candidates, psnr)}}


@torch.no_grad()
def fit_colour_table(val: torch.Tensor, chunk: int = 512, device: torch.device | str = "cpu") -> ColourTable:
    table = ColourTable()
    for x in Batches(val, chunk, shuffle=False, seed=0, device=device):
        table.fit(x)
    return table


