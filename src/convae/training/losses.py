"""Binary cross-entropy as torch defines it, about 2× faster on CPU for training.

Why: ``F.binary_cross_entropy``'s CPU kernel is a scalar loop. For the ``fc`` preset
(784-200-784, batch 124) it took 1.7 ms of a 5 ms training step, a third of all the time,
more than both matmuls of the forward pass together. The same formula in vectorised
tensor ops, with the gradient written out, costs 0.9 ms for forward and backward.

It is the same function: each log is clamped at −100 as torch clamps it, and the
gradient is torch's ``grad · (p − x) / max(p(1 − p), 1e-12)`` divided by the element
count (mean reduction). tests/test_train.py checks the loss and the gradient against
``F.binary_cross_entropy``, at the extremes too.
"""

from __future__ import annotations

from typing import Any

import torch

#: torch's ``EPSILON`` in binary_cross_entropy_backward.
GRAD_EPSILON = 1e-12
#: torch clamps each log at this value, so a prediction of exactly 0 or 1 costs 100, not Inf.
LOG_FLOOR = -100.0


class _BinaryCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(p, x)
        log_p = torch.log(p).clamp_(min=LOG_FLOOR)
        log_q = torch.log(1 - p).clamp_(min=LOG_FLOOR)
        # x·log p + (1 − x)·log(1 − p) = log(1 − p) + x·(log p − log(1 − p))
        return -log_q.add_(log_p.sub_(log_q).mul_(x)).mean()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        p, x = ctx.saved_tensors
        scale = (p * (1 - p)).clamp_(min=GRAD_EPSILON)
        return (p - x).div_(scale).mul_(grad / p.numel()), None


def binary_cross_entropy(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean BCE of predictions ``p`` in [0, 1] against targets ``x`` (no gradient for ``x``)."""
    if x.requires_grad:  # a learnt target is not what training needs: keep torch's full version
        return torch.nn.functional.binary_cross_entropy(p, x)
    return _BinaryCrossEntropy.apply(p, x)
