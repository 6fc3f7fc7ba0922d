"""Whole images of any size through a model that takes one tile size, in bounded memory.

A patch-trained model takes N×N. An image of any size is cut into N×N tiles that overlap
by half a tile, the tiles go through the model a batch at a time, and each output pixel is
the weighted mean of the tiles covering it. The weight falls off linearly towards a tile's
edges (where a convolution sees padding instead of the image), so seams vanish. Memory is
the float output and weight planes plus one batch of tiles: a 4000×3000 RGB photo needs
about 200 MB besides the model, whatever the model.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

#: Tiles per model call: enough to keep the CPU busy, few enough to bound memory.
TILE_BATCH = 32


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Where tiles start along one side so they cover ``length`` (the last one flush with the end)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def blend_window(h: int, w: int) -> torch.Tensor:
    """h×w weights: 1 in the middle, falling linearly to a small positive value at the edges."""
    def ramp(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float32)
        return torch.minimum(i + 1, n - i) / ((n + 1) / 2)

    return torch.outer(ramp(h), ramp(w))


def pad_to_tile(image: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    """``image`` (C×H×W) grown to at least the tile by repeating its edge pixels, in its own dtype."""
    th, tw = tile
    _, h, w = image.shape
    if h >= th and w >= tw:
        return image
    padded = F.pad(image[None].float(), (0, max(tw - w, 0), 0, max(th - h, 0)), mode="replicate")[0]
    return padded.round().to(torch.uint8) if image.dtype == torch.uint8 else padded.to(image.dtype)


@torch.no_grad()
def apply_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: tuple[int, int],
    *,
    device: torch.device | str = "cpu",
    batch: int = TILE_BATCH,
    stride: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``fn`` over the overlapping tiles of one C×H×W image (uint8, or float in [0, 1]); the
    blended result, float32 C'×H×W on the CPU, exactly the input's H×W.

    ``fn`` maps a float batch N×C×th×tw on ``device`` to N×C'×th×tw. An image smaller than
    the tile is padded by repeating its edge pixels, and the result cropped back.
    """
    th, tw = tile
    _, h, w = image.shape
    if h < th or w < tw:
        padded = pad_to_tile(image, tile)
        return apply_tiled(fn, padded, tile, device=device, batch=batch, stride=stride)[:, :h, :w]
    sy, sx = stride or (max(th // 2, 1), max(tw // 2, 1))
    places = [(y, x) for y in tile_starts(h, th, sy) for x in tile_starts(w, tw, sx)]
    window = blend_window(th, tw)
    total: torch.Tensor | None = None
    weight = torch.zeros(h, w)
    scale = 255.0 if image.dtype == torch.uint8 else 1.0
    for start in range(0, len(places), batch):
        chunk = places[start:start + batch]
        x = torch.stack([image[:, y:y + th, x0:x0 + tw] for y, x0 in chunk]).to(device).float()
        if scale != 1.0:
            x = x.div_(scale)
        y_out = fn(x).float().cpu()
        if total is None:
            total = torch.zeros(y_out.shape[1], h, w)
        weighted = y_out * window
        for (y, x0), part in zip(chunk, weighted):
            total[:, y:y + th, x0:x0 + tw] += part
            weight[y:y + th, x0:x0 + tw] += window
    assert total is not None
    return total.div_(weight)


def grid_places(size: tuple[int, int], tile: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners of tiles that cover an image edge to edge without overlap (but for the
    last row and column, which end flush with the image): the fewest tiles, for codes."""
    return [(y, x) for y in tile_starts(size[0], tile[0], tile[0]) for x in tile_starts(size[1], tile[1], tile[1])]


def cut_tiles(image: torch.Tensor, tile: tuple[int, int]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """(N×C×th×tw tiles of one C×H×W image, their places); a small image is edge-padded first."""
    th, tw = tile
    image = pad_to_tile(image, tile)
    places = grid_places(tuple(image.shape[1:]), tile)
    return torch.stack([image[:, y:y + th, x:x + tw] for y, x in places]), places


def assemble(tiles: torch.Tensor, places: list[tuple[int, int]], size: tuple[int, int]) -> torch.Tensor:
    """The C×H×W image of decoded tiles at ``places`` (where they overlap, blended as in apply_tiled)."""
    _, c, th, tw = tiles.shape
    height, width = max(size[0], th), max(size[1], tw)
    window = blend_window(th, tw)
    total, weight = torch.zeros(c, height, width), torch.zeros(height, width)
    for part, (y, x) in zip(tiles.float().cpu(), places):
        total[:, y:y + th, x:x + tw] += part * window
        weight[y:y + th, x:x + tw] += window
    return total.div_(weight)[:, : size[0], : size[1]]
