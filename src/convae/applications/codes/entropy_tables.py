"""Integer probability tables for the entropy coder, computed the same way on every machine.

The range coder needs, for every symbol it codes, a discrete distribution that the decoder
can rebuild *exactly*: one differing probability and the rest of the stream is garbage.
CompressAI keeps such tables as buffers that a user must remember to refresh with
``update()`` after training (its issues #16, #50, #148, #305); here they are a pure
function of the weights, rebuilt whenever a run encodes or decodes:

* everything is evaluated on the CPU in float64, so neither the device nor the thread count
  that trained or runs the model changes a bit of it;
* each distribution's support is found by bisection on the monotone cumulative, out to a
  tail mass of 1e-9 per side (what CompressAI's auxiliary loss learns, found directly);
* probabilities become integer counts summing to 2**16, every symbol at least 1, plus one
  *escape* symbol for values beyond the support (those are then coded raw, see bitstream).

The coder is handed ``counts / 2**16``, which float64 holds exactly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from convae.models.entropy import SCALE_BOUND, SCALE_TABLE, FactorizedDensity, gaussian_bin_probability

#: Probability mass left outside a table's support on each side.
TAIL_MASS = 1e-9
#: The counts of one table sum to this (16-bit probabilities).
TOTAL = 1 << 16
#: The widest support a table may have; wider distributions escape more often, never fail.
MAX_SUPPORT = 1 << 12


@dataclass
class SymbolTable:
    """A distribution over ``offset .. offset + len(counts) - 2`` plus the escape (last) symbol."""

    offset: int
    counts: np.ndarray  # int64, sums to TOTAL
    _model: Any = field(default=None, repr=False, compare=False)

    @property
    def support(self) -> int:
        return len(self.counts) - 1

    def model(self) -> Any:
        """The coder's categorical model (built once per table)."""
        if self._model is None:
            import constriction

            self._model = constriction.stream.model.Categorical(self.counts / float(TOTAL), perfect=False)
        return self._model

    def bits(self, values: np.ndarray) -> np.ndarray:
        """What each value costs under this table, in bits (the escape's raw 16 bits included)."""
        symbols = values - self.offset
        escaped = (symbols < 0) | (symbols >= self.support)
        probability = self.counts[np.where(escaped, self.support, symbols)] / TOTAL
        return -np.log2(probability) + 16.0 * escaped


def integer_counts(probabilities: np.ndarray) -> np.ndarray:
    """Counts ≥ 1 summing to TOTAL, as close to ``probabilities * TOTAL`` as that allows."""
    probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, None)
    spare = TOTAL - len(probabilities)
    counts = 1 + np.floor(probabilities / probabilities.sum() * spare).astype(np.int64)
    remainder = TOTAL - int(counts.sum())
    order = np.argsort(-probabilities, kind="stable")
    counts[order[: remainder]] += 1  # the leftover counts to the likeliest symbols
    return counts


def _table(offset: int, pmf: np.ndarray) -> SymbolTable:
    pmf = np.clip(pmf, 0.0, None)
    escape = max(1.0 - float(pmf.sum()), 2 * TAIL_MASS)
    return SymbolTable(int(offset), integer_counts(np.append(pmf, escape)))


def _bisect(function, target: float, channels: int) -> np.ndarray:
    """Per channel, the x where a monotone increasing ``function`` (C×1×1 → C×1×1) meets ``target``."""
    low = torch.full((channels, 1, 1), -1.0, dtype=torch.float64)
    high = torch.full((channels, 1, 1), 1.0, dtype=torch.float64)
    for _ in range(40):  # widen the bracket until it holds the crossing
        low = torch.where(function(low) > target, low * 2, low)
        high = torch.where(function(high) < target, high * 2, high)
    for _ in range(60):
        middle = (low + high) / 2
        above = function(middle) > target
        high, low = torch.where(above, middle, high), torch.where(above, low, middle)
    return ((low + high) / 2).flatten().numpy()


@torch.no_grad()
def factorized_tables(density: FactorizedDensity) -> list[SymbolTable]:
    """One table per channel of a factorized density (CPU, float64, deterministic)."""
    density = copy.deepcopy(density).to("cpu", torch.float64)
    channels = density.channels
    logit = float(np.log(TAIL_MASS / (1 - TAIL_MASS)))
    lower = _bisect(density.logits_cumulative, logit, channels)
    upper = _bisect(density.logits_cumulative, -logit, channels)
    lows = np.floor(lower).astype(np.int64)
    highs = np.maximum(lows, np.minimum(np.ceil(upper).astype(np.int64), lows + MAX_SUPPORT - 1))
    grid = torch.arange(int(lows.min()), int(highs.max()) + 1, dtype=torch.float64)
    pmf = density.bin_probability(grid.view(1, 1, -1).expand(channels, 1, -1).contiguous())[:, 0].numpy()
    start = int(lows.min())
    return [_table(int(low), pmf[c, low - start: high - start + 1]) for c, (low, high) in enumerate(zip(lows, highs))]


@dataclass
class GaussianTables:
    """The hyperprior's tables: one per entry of the scale table, and how a scale picks one."""

    tables: list[SymbolTable]

    @cached_property
    def scales(self) -> np.ndarray:
        return np.asarray(SCALE_TABLE, dtype=np.float64)

    def indexes(self, scales: np.ndarray) -> np.ndarray:
        """The table of each predicted scale: the smallest tabulated scale at or above it."""
        bounded = np.maximum(np.asarray(scales, dtype=np.float64), SCALE_BOUND)
        return np.minimum(np.searchsorted(self.scales, bounded, side="left"), len(self.scales) - 1)


@torch.no_grad()
def gaussian_tables() -> GaussianTables:
    """Zero-mean Gaussian tables for every tabulated scale (the same for every run)."""
    tail = float(-torch.special.ndtri(torch.tensor(TAIL_MASS, dtype=torch.float64)))
    tables = []
    for scale in SCALE_TABLE:
        half = min(int(np.ceil(scale * tail)), MAX_SUPPORT // 2 - 1)
        values = torch.arange(-half, half + 1, dtype=torch.float64)
        pmf = gaussian_bin_probability(values, torch.tensor(scale, dtype=torch.float64)).numpy()
        tables.append(_table(-half, pmf))
    return GaussianTables(tables)
