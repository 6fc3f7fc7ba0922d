"""Generalized divisive normalization, the activation of Ballé's learned image codecs.

GDN (Ballé, Laparra & Simoncelli, "Density Modeling of Images using a Generalized
Normalization Transformation", ICLR 2016) divides each channel by a learned norm of all
channels at the same place: ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``. It
Gaussianises image statistics far better than a ReLU, which is why the bmshj2018 codecs
use it; the inverse (IGDN) in the synthesis multiplies instead of dividing.

The parameters are kept non-negative as CompressAI does (``NonNegativeParametrizer`` in
compressai/ops/parametrizers.py, checked against it): stored as ``sqrt(value + pedestal)``,
bounded below, and squared back, so gradient steps never make a norm negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: CompressAI's pedestal (2**-18 squared): keeps the square root's gradient finite near zero.
PEDESTAL = 2.0 ** -36


class _LowerBound(torch.autograd.Function):
    """``max(x, bound)`` whose gradient still flows where it would raise x back above the bound.

    A plain clamp kills the gradient of a parameter that fell below its bound, so it could
    never recover; this is CompressAI's ``LowerBoundFunction`` (compressai/ops/bound_ops.py).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ((x >= ctx.bound) | (grad < 0)).to(grad.dtype), None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    return _LowerBound.apply(x, bound)


def _non_negative(stored: torch.Tensor, minimum: float) -> torch.Tensor:
    return lower_bound(stored, (minimum + PEDESTAL) ** 0.5).pow(2) - PEDESTAL


class GDN(nn.Module):
    """GDN over the channels (``inverse=True``: IGDN, for the synthesis transform)."""

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1) -> None:
        super().__init__()
        self.inverse, self.beta_min = inverse, beta_min
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + PEDESTAL))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + PEDESTAL))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        beta = _non_negative(self.beta, self.beta_min).to(x.dtype)
        gamma = _non_negative(self.gamma, 0.0).to(x.dtype).view(channels, channels, 1, 1)
        norm = F.conv2d(x * x, gamma, beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)
