"""The one model class every preset and every user-supplied pair plugs into."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class SwitchedCode(NamedTuple):
    """A code that carries max-pooling switches for a MaxUnpool decoder.

    The unpooling decoder cannot place values without knowing where each maximum came
    from, so the switches travel with the code instead of hiding as module state.
    ``switches`` holds (indices, pre-pool size) pairs, the last pooling first, so the
    first decoder layer pops the first pair.
    """

    values: torch.Tensor
    switches: tuple[tuple[torch.Tensor, torch.Size], ...]


def code_values(code: torch.Tensor | SwitchedCode) -> torch.Tensor:
    """The numeric part of a code, whatever the encoder returned."""
    return code.values if isinstance(code, SwitchedCode) else code


class AutoEncoder(nn.Module):
    """``forward(x) = decode(encode(x))`` for any encoder/decoder pair.

    Keeping encode and decode separate is what the applications need: codes are
    stored, probed and interpolated, and decoded later.
    """

    #: Whether a colorizer's chroma head (convae.models.heads) may wrap this model's encoder and decoder.
    takes_color_head = True

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder is given: the input itself (a model that needs a size pads it here)."""
        return x

    def finish(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The decoder's output as the model returns it for input ``x`` (a padding model crops here)."""
        return output

    def encode(self, x: torch.Tensor) -> torch.Tensor | SwitchedCode:
        return self.encoder(self.prepare(x))

    def decode(self, code: torch.Tensor | SwitchedCode) -> torch.Tensor:
        return self.decoder(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.decode(self.encode(x)), x)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate the bottom and right edges up to a multiple of ``multiple`` (the caller crops them off)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


class PaddedAutoEncoder(AutoEncoder):
    """An autoencoder whose downsampling needs a size: the input is padded to a multiple of
    ``multiple`` and the output cropped back, so any size in gives the same size out."""

    multiple = 16

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return pad_to_multiple(x, self.multiple)

    def finish(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return output[..., : x.shape[-2], : x.shape[-1]]
