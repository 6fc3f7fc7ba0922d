"""Corruptions applied per batch, on the fly, from a seeded generator.

Restoration tasks train ``corrupted → clean``. Corrupting each batch as it is drawn (and
never storing a float copy of the dataset) keeps memory at the uint8 dataset's size and
gives a fresh corruption every epoch. The generator is seeded from (seed, epoch, step),
so a resumed run draws exactly the noise the uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from convae.core.errors import ConvaeError
from convae.core.images import luma

KINDS = ("gaussian", "poisson", "jpeg", "salt-pepper", "mask", "gray")
#: The strengths each kind takes (inclusive), its default, and whether it takes a range LOW-HIGH.
LIMITS = {"gaussian": (0.0, 10.0), "poisson": (0.01, 1e6), "jpeg": (1.0, 100.0), "salt-pepper": (0.0, 1.0),
          "mask": (0.0, 1.0)}
DEFAULTS = {"gaussian": 0.5, "poisson": 30.0, "jpeg": 20.0, "salt-pepper": 0.2, "mask": 0.25}
RANGED = frozenset({"gaussian", "poisson", "jpeg"})


@dataclass(frozen=True)
class Corruption:
    """A named corruption with its one strength parameter, or (blind) a range it is drawn from.

    ``gaussian:0.0-0.2`` draws each image's σ uniformly from [0, 0.2] with the batch's own
    generator, so a model learns every noise level and a resumed run draws the same σs.
    """

    kind: str
    strength: float = 0.0
    high: float | None = None  # a range: strength is its low end

    def __str__(self) -> str:
        if self.kind == "gray":
            return self.kind
        return f"{self.kind}:{self.strength:g}" + (f"-{self.high:g}" if self.high is not None else "")

    def levels(self) -> list["Corruption"]:
        """Fixed levels a blind range is scored at: the field's σ 15, 25 and 50 (/255) where the range holds
        them, else its quarter, middle and three-quarter points; a fixed corruption is its own one level."""
        if self.high is None:
            return [self]
        standard = [v / 255 for v in (15, 25, 50) if self.strength <= v / 255 <= self.high]
        points = standard if self.kind == "gaussian" and standard else [
            self.strength + (self.high - self.strength) * t for t in (0.25, 0.5, 0.75)]
        return [Corruption(self.kind, round(v) if self.kind == "jpeg" else round(v, 4)) for v in points]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.high is None:
            return APPLY[self.kind](x, self.strength, generator)
        levels = torch.rand((x.shape[0], 1, 1, 1), generator=generator, device=x.device, dtype=x.dtype)
        return APPLY[self.kind](x, self.strength + (self.high - self.strength) * levels, generator)


def parse_corruption(spec: str) -> Corruption:
    """'gaussian:0.5', 'gaussian:0.0-0.2' (blind: σ per image from the range), 'poisson:PEAK' (shot
    noise of an image whose white is PEAK photons, or a range of peaks), 'jpeg:10-50' (JPEG
    artefacts at a quality per image from the range), 'salt-pepper:0.2', 'mask:0.25' or 'gray'."""
    kind, _, value = spec.strip().lower().partition(":")
    kind = {"sp": "salt-pepper", "saltpepper": "salt-pepper", "s&p": "salt-pepper", "cutout": "mask",
            "grayscale": "gray", "noise": "gaussian"}.get(kind, kind)
    if kind not in KINDS:
        raise ConvaeError(f"--noise {spec!r}: unknown corruption {kind!r}; use one of {', '.join(KINDS)}")
    if kind == "gray":
        return Corruption("gray")
    low_text, dash, high_text = value.partition("-") if kind in RANGED else (value, "", "")
    try:
        strength = float(low_text) if low_text else DEFAULTS[kind]
        high = float(high_text) if dash else None
    except ValueError:
        raise ConvaeError(f"--noise {spec!r}: {value!r} is not a number or a range LOW-HIGH") from None
    least, most = LIMITS[kind]
    for level in (strength, high):
        if level is not None and not least <= level <= most:
            raise ConvaeError(f"--noise {spec!r}: strength {level:g} is out of range ({kind} takes {least:g} to "
                              f"{most:g})")
    if high is not None and high <= strength:
        raise ConvaeError(f"--noise {spec!r}: a range LOW-HIGH needs LOW below HIGH")
    return Corruption(kind, strength, high)


def batch_generator(seed: int, epoch: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator for one batch: a pure function of (seed, epoch, step)."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + step)
    return generator


def item_generators(seed: int, epoch: int, step: int, positions: range,
                    device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per item of global batch ``step``, keyed by the item's place in that batch.

    Why per item: under torchrun a process holds only a slice of the global batch, and a draw
    from one batch generator would depend on which slice. Keyed by the place, the process that
    holds items 4…7 draws for them exactly what one process draws for them.
    """
    base = ((seed * 1_000_003 + epoch) * 1_000_033 + step) * 1_000_037
    generators = []
    for position in positions:
        generator = torch.Generator(device=device)
        generator.manual_seed((base + position) % 2**63)
        generators.append(generator)
    return generators


def gaussian(x: torch.Tensor, sigma: float | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Additive noise of σ ``sigma`` (one number, or one per image as an N×1×1×1 tensor), clipped to [0, 1]."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + sigma * noise).clamp_(0.0, 1.0)


def poisson(x: torch.Tensor, peak: float | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shot noise: each value counts photons of a Poisson law with mean ``value · peak``, divided back.

    A low peak is a dark, noisy exposure (peak 4 is very noisy, 100 mild); the noise grows with
    the brightness, unlike Gaussian noise (Foi et al.'s Poisson–Gaussian model, its Poisson part).
    """
    return torch.poisson(x * peak, generator=generator).div_(peak).clamp_(0.0, 1.0)


def jpeg(x: torch.Tensor, quality: float | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image JPEG-compressed by Pillow at ``quality`` (one number, or one per image) and decoded back."""
    import io

    import numpy as np
    from PIL import Image

    qualities = quality.flatten().tolist() if isinstance(quality, torch.Tensor) else [quality] * x.shape[0]
    images = (x.detach().clamp(0, 1) * 255).round().to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for image, q in zip(images, qualities):
        buffer = io.BytesIO()
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(
            buffer, format="JPEG", quality=max(1, min(100, round(q))))
        back = np.asarray(Image.open(buffer))
        out.append(torch.from_numpy(back.reshape(image.shape).copy()))
    return torch.stack(out).permute(0, 3, 1, 2).to(x.device, x.dtype).div_(255)


def salt_pepper(x: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """A fraction ``amount`` of pixels (all channels together) set to 0 or 1, half each."""
    n, _, h, w = x.shape
    draw = torch.rand((n, 1, h, w), generator=generator, device=x.device)
    out = x.clone()
    out.masked_fill_((draw < amount / 2).expand_as(x), 0.0)
    out.masked_fill_(((draw >= amount / 2) & (draw < amount)).expand_as(x), 1.0)
    return out


def mask(x: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Cutout: one zeroed rectangle per image covering about ``fraction`` of its area."""
    n, _, h, w = x.shape
    side_h = max(1, round(h * fraction**0.5)) if fraction > 0 else 0
    side_w = max(1, round(w * fraction**0.5)) if fraction > 0 else 0
    out = x.clone()
    if side_h == 0:
        return out
    tops = torch.randint(0, h - side_h + 1, (n,), generator=generator, device=x.device)
    lefts = torch.randint(0, w - side_w + 1, (n,), generator=generator, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows >= tops.view(n, 1, 1)) & (rows < (tops + side_h).view(n, 1, 1))
              & (cols >= lefts.view(n, 1, 1)) & (cols < (lefts + side_w).view(n, 1, 1)))
    return out.masked_fill_(inside.unsqueeze(1).expand_as(x), 0.0)


def gray(x: torch.Tensor, _strength: float = 0.0, _generator: torch.Generator | None = None) -> torch.Tensor:
    """ITU-R 601 luma, one channel: what a colorization model sees."""
    return luma(x)


APPLY: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "gaussian": gaussian,
    "poisson": poisson,
    "jpeg": jpeg,
    "salt-pepper": salt_pepper,
    "mask": mask,
    "gray": gray,
}
