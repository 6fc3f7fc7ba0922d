"""Will one training step fit? An estimate made before anything is allocated.

The model is built on PyTorch's ``meta`` device, where tensors have shapes but no storage,
and one image is pushed through it with hooks that add up every layer's output. A step
keeps the activations for the backward pass and as much again for their gradients, and
the weights four times over (weights, gradients, Adam's two moments). The estimate is
meant to turn "DefaultCPUAllocator: can't allocate memory" into a sentence that names the
input size, the batch and what would fit, not to be exact.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from convae.core.device import free_memory, gib
from convae.core.errors import ConvaeError

#: Headroom kept free for the data, the optimizer's temporaries and everything else.
MARGIN = 0.8
#: Bytes of a step per input value below which no estimate is needed (the presets keep 20–150).
OBVIOUS_FIT = 2_000


def step_bytes(build: Callable[[], torch.nn.Module], input_shape: tuple[int, ...], batch: int) -> int | None:
    """Estimated bytes of one training step at ``batch`` (None when the model cannot run on ``meta``)."""
    try:
        with torch.device("meta"):
            model = build()
        outputs = 0

        def count(_module: torch.nn.Module, _inputs: object, output: object) -> None:
            nonlocal outputs
            for tensor in output if isinstance(output, (tuple, list)) else (output,):
                if isinstance(tensor, torch.Tensor):
                    outputs += tensor.numel() * 4

        hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
        try:
            with torch.no_grad():
                model(torch.empty(1, *input_shape, device="meta"))
        finally:
            for hook in hooks:
                hook.remove()
    except Exception:
        return None
    weights = sum(p.numel() * 4 for p in model.parameters())
    per_image = 2 * outputs + 2 * 4 * math.prod(input_shape)
    return 4 * weights + batch * per_image


def check_step_fits(build: Callable[[], torch.nn.Module], input_shape: tuple[int, ...], batch: int,
                    device: torch.device, what: str) -> None:
    """Refuse, in one line, a step that cannot fit on ``device``: input size, batch, estimate, a batch that would.

    The first forward pass on ``meta`` loads torch's meta kernels, 2.8 s of a command's start-up,
    so a step that is small beside the free memory even at ``OBVIOUS_FIT`` bytes per input value
    (far more than any preset keeps) is not estimated at all.
    """
    free = free_memory(device)
    values = batch * math.prod(input_shape)
    if free is not None and values * OBVIOUS_FIT <= MARGIN * free:
        return
    need = step_bytes(build, input_shape, batch)
    if need is None or free is None or need <= MARGIN * free:
        return
    c, h, w = input_shape
    one = step_bytes(build, input_shape, 1) or need
    fits = int((MARGIN * free - (one - (need - one) / max(batch - 1, 1))) // max((need - one) / max(batch - 1, 1), 1))
    hint = (f"try --batch-size {max(fits, 1)}" if fits >= 1 else
            "even one image does not fit; try a smaller --image-size or a fully convolutional preset (--model strided)")
    raise ConvaeError(f"one training step of {what} on {c}×{h}×{w} images (C×H×W) with batch {batch} needs about "
                      f"{gib(need)}, and {device.type} has {gib(free)} free; {hint}")
