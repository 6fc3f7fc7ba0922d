"""Simulated defects for inspection training: DRAEM's Perlin masks, blurred regions, CutPaste patches, scars.

DRAEM (Zavrtanik, Kristan & Skočaj, "DRAEM – A discriminatively trained reconstruction
embedding for surface anomaly detection", ICCV 2021) learns to find defects without ever
seeing one: it paints synthetic ones onto good images. Following the authors' reference code
(github.com/VitjanZ/DRAEM, data_loader.py and perlin.py, checked against it):

* a Perlin noise map at a random power-of-two scale 2^0 … 2^5 per axis, rotated by up to ±90°,
  thresholded at 0.5, is the defect's shape;
* the shape is filled with a foreign texture blended in with opacity 1 − β, β uniform in
  [0, 0.8): ``x·(1 − m) + (1 − β)·t·m + β·x·m``;
* half of the samples stay clean (their mask is empty).

Where DRAEM fills from the DTD texture set (a download), the texture here comes from
``sources`` (any folder of images a user gives with ``--anomaly-source``) or, by default,
from the training images themselves (``pool``), flipped and colour-jittered, or a colour
Perlin texture. CutPaste (Li et al., CVPR 2021) patches from elsewhere in the same image,
and its thin "scar" variant (turned to any angle, as a scratch runs), add defects whose
texture is the part's own, which a Perlin fill never gives. A blurred Perlin region (detail
lost, colour kept: an out-of-focus or smeared patch, and, at large σ, a flat one) removes
texture instead of adding it, which neither of the others paints; it is not in DRAEM. Each
image's draws come from its own generator, keyed by its place in the global batch, and the
default textures come from the fixed training set, not from the batch: a resumed run paints
the same defects, and so does a torchrun shard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Perlin scales are 2**k for k in [0, MAX_SCALE_POWER) per axis, as in DRAEM (perlin_scale = 6).
MAX_SCALE_POWER = 6
THRESHOLD = 0.5
#: How a defective sample's kind is drawn: cumulative shares of Perlin texture fills, blurred
#: Perlin regions, CutPaste patches and (the rest) scars.
PERLIN_SHARE, BLUR_SHARE, CUT_PASTE_SHARE = 0.5, 0.15, 0.2
#: The simulated kinds, in the order of those shares.
KINDS = ("perlin", "blur", "cut_paste", "scar")
#: The blur's Gaussian σ is log-uniform in this range, in pixels.
BLUR_SIGMA = (1.0, 6.0)


def _fade(t: torch.Tensor) -> torch.Tensor:
    return 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3


def perlin(height: int, width: int, res: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """2-D Perlin noise of ``res`` periods per axis, H×W, values roughly in [-1, 1] (DRAEM's rand_perlin_2d)."""
    ry, rx = res
    rows, cols = -(-height // ry) * ry, -(-width // rx) * rx  # a whole number of cells, cropped after
    gy = torch.arange(rows, dtype=torch.float32) * ry / rows
    gx = torch.arange(cols, dtype=torch.float32) * rx / cols
    cell_y, cell_x = gy.floor().long(), gx.floor().long()
    fy, fx = (gy % 1).view(-1, 1), (gx % 1).view(1, -1)
    angles = 2 * math.pi * torch.rand(ry + 1, rx + 1, generator=generator, device=generator.device).cpu()
    gradients = torch.stack((torch.cos(angles), torch.sin(angles)), dim=-1)

    def corner(dy: int, dx: int) -> torch.Tensor:
        grad = gradients[cell_y + dy][:, cell_x + dx]
        return grad[..., 0] * (fy - dy) + grad[..., 1] * (fx - dx)

    ty, tx = _fade(fy), _fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), tx)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), tx)
    return (math.sqrt(2) * torch.lerp(top, bottom, ty))[:height, :width]


def _uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, device=generator.device))


def _integer(generator: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high, (), generator=generator, device=generator.device))


def perlin_mask(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A defect shape: rotated Perlin noise above 0.5, as a float H×W mask of 0s and 1s (may be empty)."""
    from torchvision.transforms.functional import rotate

    res = (2 ** _integer(generator, 0, MAX_SCALE_POWER), 2 ** _integer(generator, 0, MAX_SCALE_POWER))
    noise = perlin(height, width, res, generator)
    noise = rotate(noise[None], _uniform(generator, -90, 90))[0]
    return (noise > THRESHOLD).float()


def _fitted(source: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A uint8 C'×H'×W' texture as floats in [0, 1] with ``like``'s channels and size."""
    channels, height, width = like.shape
    texture = source.to(like.device, like.dtype).div(255)
    if texture.shape[0] != channels:
        texture = texture.mean(0, keepdim=True).expand(channels, -1, -1) if channels == 1 or texture.shape[0] == 1 \
            else texture[:channels]
    if texture.shape[1:] != (height, width):
        texture = F.interpolate(texture[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return texture


def _window(source: torch.Tensor, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A random H×W window of a larger C×H'×W' image; the image itself when it is not larger.

    A part's own texture keeps its scale on a training crop (--crop) instead of being shrunk
    to fit it; no random draw is made when the sizes match, so whole-part runs paint as before.
    """
    if source.shape[-2] < height or source.shape[-1] < width or tuple(source.shape[-2:]) == (height, width):
        return source
    top = _integer(generator, 0, source.shape[-2] - height + 1)
    left = _integer(generator, 0, source.shape[-1] - width + 1)
    return source[..., top:top + height, left:left + width]


def jitter(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Colour jitter of one C×H×W image in [0, 1]: a gain and an offset per channel, then contrast."""
    channels = image.shape[0]
    gain = torch.rand(channels, 1, 1, generator=generator, device=generator.device).to(image) * 0.8 + 0.6
    offset = torch.rand(channels, 1, 1, generator=generator, device=generator.device).to(image) * 0.4 - 0.2
    out = image * gain + offset
    mean = out.mean()
    return ((out - mean) * _uniform(generator, 0.7, 1.5) + mean).clamp(0, 1)


@dataclass
class DefectSimulator:
    """Paints simulated defects on a batch; returns (images, masks) with masks B×1×H×W in {0, 1}.

    ``sources``: uint8 N×C×H'×W' images to take textures from (``--anomaly-source``), or None
    for the default: a training image from ``pool`` (uint8 N×C×H×W), flipped and jittered, or
    a colour Perlin texture.
    """

    sources: torch.Tensor | None = None
    pool: torch.Tensor | None = None
    clean_fraction: float = 0.5

    def __call__(self, x: torch.Tensor, generators: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """Paint image i of ``x`` with ``generators[i]`` (see convae.data.corrupt.item_generators)."""
        if len(generators) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {len(generators)} generators")
        out, masks = x.clone(), torch.zeros(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        for i, generator in enumerate(generators):
            kind = self.draw_kind(generator)
            if kind is not None:
                out[i], masks[i, 0] = self.paint(x[i], generator, kind)
        return out, masks

    def draw_kind(self, generator: torch.Generator) -> str | None:
        """Which of ``KINDS`` one sample gets, or None for a clean one (one draw from ``generator``)."""
        draw = _uniform(generator)
        if draw < self.clean_fraction:
            return None
        share = (draw - self.clean_fraction) / max(1 - self.clean_fraction, 1e-9)
        bounds = (PERLIN_SHARE, PERLIN_SHARE + BLUR_SHARE, PERLIN_SHARE + BLUR_SHARE + CUT_PASTE_SHARE)
        return next((kind for kind, bound in zip(KINDS, bounds) if share < bound), KINDS[-1])

    def paint(self, image: torch.Tensor, generator: torch.Generator, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One defect of ``kind`` on one C×H×W image: (painted image, H×W mask of the painted pixels).

        Public so that a trained run can be asked how well it finds each kind on its own
        (benchmarks/inspect_simulated_kinds.py): the per-epoch check mixes them all.
        """
        if kind == "perlin":
            return self._perlin(image, generator)
        if kind == "blur":
            return self._blur(image, generator)
        if kind == "cut_paste":
            return self._cut_paste(image, generator)
        if kind == "scar":
            return scar(image, generator)
        raise ValueError(f"unknown simulated defect {kind!r}; choose one of {', '.join(KINDS)}")

    def texture(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A foreign texture the size of ``image`` (C×H×W in [0, 1])."""
        channels, height, width = image.shape
        if self.sources is not None and len(self.sources):
            return jitter(_fitted(self.sources[_integer(generator, 0, len(self.sources))], image), generator)
        if self.pool is not None and len(self.pool) and _uniform(generator) < 0.5:
            other = _fitted(_window(self.pool[_integer(generator, 0, len(self.pool))], height, width, generator),
                            image)
            return jitter(torch.flip(other, dims=(-1, -2)), generator)
        res = 2 ** _integer(generator, 1, MAX_SCALE_POWER)
        planes = [perlin(height, width, (res, res), generator) for _ in range(channels)]
        return (torch.stack(planes).to(image.device, image.dtype) * 0.5 + 0.5).clamp(0, 1)

    def _perlin(self, image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        mask = perlin_mask(image.shape[1], image.shape[2], generator).to(image.device, image.dtype)
        beta = _uniform(generator, 0.0, 0.8)
        texture = self.texture(image, generator)
        return image * (1 - mask) + (1 - beta) * texture * mask + beta * image * mask, mask

    @staticmethod
    def _blur(image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A Perlin region replaced by a Gaussian blur of the image; the mask is the pixels that changed.

        A flat area inside the shape does not change when blurred, so it is not marked: the
        mask stays exactly the painted pixels, as for every other kind.
        """
        from torchvision.transforms.functional import gaussian_blur

        shape = perlin_mask(image.shape[1], image.shape[2], generator).to(image.device, image.dtype)
        sigma = math.exp(_uniform(generator, math.log(BLUR_SIGMA[0]), math.log(BLUR_SIGMA[1])))
        kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * min(image.shape[1:]) - 1)  # reflect padding's limit
        blurred = gaussian_blur(image, [kernel, kernel], [sigma, sigma])
        mask = shape * ((blurred - image).abs().amax(0) > 0).to(image.dtype)
        return image * (1 - mask) + blurred * mask, mask

    @staticmethod
    def _cut_paste(image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A patch of the image itself, jittered and pasted elsewhere."""
        _, height, width = image.shape
        area = height * width * _uniform(generator, 0.02, 0.15)
        aspect = math.exp(_uniform(generator, math.log(0.3), math.log(3.3)))
        ph = max(1, min(height - 1, round(math.sqrt(area * aspect))))
        pw = max(1, min(width - 1, round(math.sqrt(area / aspect))))
        ph, pw = min(ph, height), min(pw, width)
        top, left = _integer(generator, 0, height - ph + 1), _integer(generator, 0, width - pw + 1)
        to_top, to_left = _integer(generator, 0, height - ph + 1), _integer(generator, 0, width - pw + 1)
        whole = torch.ones(ph, pw, dtype=torch.bool, device=image.device)
        return _paste(image, whole, (top, left), (to_top, to_left), generator)


def scar(image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """CutPaste's scar: a thin strip of the part itself, jittered, at any angle, moved elsewhere.

    CutPaste-Scar (Li et al., CVPR 2021; reference github.com/Runinho/pytorch-cutpaste,
    ``CutPasteScar``: width 2–16 px, height 10–25 px, turned by ±45°, at 256 px) is a thin
    rotated box. Here the width is that range scaled to the part, the length 10–25 % of the
    part's side, and the angle any direction, because a scratch on a part runs any way. The
    strip's pixels are a translated copy of the same rotated shape elsewhere on the part, so
    the mask is exactly the pasted pixels.
    """
    _, height, width = image.shape
    side = min(height, width)
    length = side * _uniform(generator, 0.1, 0.25)
    thickness = max(1.0, _uniform(generator, 2.0, 16.0) * side / 256)
    angle = _uniform(generator, 0.0, math.pi)
    cy, cx = _uniform(generator, 0, height - 1), _uniform(generator, 0, width - 1)
    ys = torch.arange(height, dtype=torch.float32).view(-1, 1) - cy
    xs = torch.arange(width, dtype=torch.float32).view(1, -1) - cx
    along = ys * math.cos(angle) + xs * math.sin(angle)
    across = xs * math.cos(angle) - ys * math.sin(angle)
    inside = (along.abs() <= length / 2) & (across.abs() <= thickness / 2)
    rows, cols = inside.any(1).nonzero()[:, 0], inside.any(0).nonzero()[:, 0]
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    from_top = _integer(generator, 0, height - (bottom - top) + 1)
    from_left = _integer(generator, 0, width - (right - left) + 1)
    return _paste(image, inside[top:bottom, left:right].to(image.device), (from_top, from_left), (top, left),
                  generator)


def _paste(image: torch.Tensor, shape: torch.Tensor, source: tuple[int, int], target: tuple[int, int],
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """CutPaste's one move, for a patch and a scar alike: the h×w window of ``image`` at ``source``,
    jittered, pasted at ``target`` where the boolean h×w ``shape`` holds; the mask is that shape."""
    (sy, sx), (ty, tx), (h, w) = source, target, shape.shape
    patch = jitter(image[:, sy:sy + h, sx:sx + w], generator)
    out, mask = image.clone(), torch.zeros(image.shape[1:], device=image.device, dtype=image.dtype)
    out[:, ty:ty + h, tx:tx + w] = torch.where(shape, patch, out[:, ty:ty + h, tx:tx + w])
    mask[ty:ty + h, tx:tx + w] = shape.to(image.dtype)
    return out, mask
