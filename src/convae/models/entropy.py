"""The learned entropy models of the codecs: what each quantised latent costs in bits.

Two models, after Ballé et al.:

* :class:`FactorizedDensity`, the "non-parametric" fully factorized density of "Variational
  image compression with a scale hyperprior" (ICLR 2018, appendix 6.1): per channel, a small
  monotone network gives the cumulative distribution, so the probability of an integer bin
  is ``c(v + 1/2) - c(v - 1/2)``. The layout (filters 3,3,3,3, init scale 10, the sign trick
  that keeps the difference of sigmoids accurate in the tails) follows CompressAI's
  ``EntropyBottleneck`` (compressai/entropy_models/entropy_models.py), checked against it.
* :func:`gaussian_likelihood`, the zero-mean Gaussian of the scale hyperprior, with the
  scale bounded below at 0.11 and the 64 log-spaced scales of CompressAI's scale table.

Training adds uniform noise in [-1/2, 1/2) as a stand-in for rounding; the likelihood of the
noisy value is then a differentiable bound on the rate. Nothing here needs an ``update()``:
the integer tables the coder needs are computed from these functions when a run encodes
(convae.applications.codes.entropy_tables), including their tails, by bisection.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from convae.models.gdn import lower_bound

#: The smallest probability a bin is given while training (CompressAI's likelihood bound).
LIKELIHOOD_BOUND = 1e-9
#: The smallest Gaussian scale, and the table of scales the coder builds tables for.
SCALE_BOUND = 0.11
SCALE_TABLE = tuple(math.exp(v) for v in torch.linspace(math.log(0.11), math.log(256), 64).tolist())


class FactorizedDensity(nn.Module):
    """A learned density per channel, evaluated through its cumulative (logits)."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        widths = (1, *filters, 1)
        scale = init_scale ** (1 / (len(widths) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(widths) - 1):
            init = math.log(math.expm1(1 / scale / widths[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, widths[i + 1], widths[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, widths[i + 1], 1) - 0.5))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[i + 1], 1)))

    @property
    def channels(self) -> int:
        return int(self.matrices[0].shape[0])

    def logits_cumulative(self, x: torch.Tensor) -> torch.Tensor:
        """The cumulative's logit at ``x`` (C×1×N), monotone in x for every channel."""
        logits = x
        for i, matrix in enumerate(self.matrices):
            logits = torch.matmul(F.softplus(matrix).to(x.dtype), logits) + self.biases[i].to(x.dtype)
            if i < len(self.factors):
                logits = logits + torch.tanh(self.factors[i].to(x.dtype)) * torch.tanh(logits)
        return logits

    def bin_probability(self, values: torch.Tensor) -> torch.Tensor:
        """P(bin of width 1 centred on each value), C×1×N in, C×1×N out (no lower bound)."""
        lower = self.logits_cumulative(values - 0.5)
        upper = self.logits_cumulative(values + 0.5)
        sign = -torch.sign(lower + upper).detach()
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """Bin probabilities of a B×C×H×W latent, bounded below so the rate stays finite."""
        channels = y.shape[1]
        flat = y.transpose(0, 1).reshape(channels, 1, -1)
        probability = self.bin_probability(flat).reshape(channels, y.shape[0], *y.shape[2:]).transpose(0, 1)
        return lower_bound(probability, LIKELIHOOD_BOUND)


def standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2.0))


def gaussian_bin_probability(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """P(bin of width 1 centred on each value) under N(0, scale²), accurate in both tails."""
    magnitude = values.abs()
    return standard_normal_cdf((0.5 - magnitude) / scales) - standard_normal_cdf((-0.5 - magnitude) / scales)


def gaussian_likelihood(y: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """The hyperprior's likelihood of ``y`` given its predicted scales (both B×C×H×W)."""
    probability = gaussian_bin_probability(y, lower_bound(scales, SCALE_BOUND))
    return lower_bound(probability, LIKELIHOOD_BOUND)


def noisy(y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive uniform noise in [-1/2, 1/2) from ``generator`` (the step's, so a resume draws it
    again): training's differentiable stand-in for rounding."""
    return y + torch.empty_like(y).uniform_(-0.5, 0.5, generator=generator)


def rounded_straight_through(y: torch.Tensor) -> torch.Tensor:
    """round(y) forward, identity backward: the synthesis sees what the decoder will see."""
    return y + (torch.round(y) - y).detach()
