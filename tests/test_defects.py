"""Simulated defects (DRAEM's Perlin masks, blurred regions, CutPaste, scars): seeded, only inside their masks, half clean."""

from __future__ import annotations

import pytest
import torch

from convae.data import Batches
from convae.data.corrupt import batch_generator, item_generators
from convae.data.defects import DefectSimulator, perlin, perlin_mask
from convae.training.tasks import StepRandom


def _each(x: torch.Tensor, seed: int, epoch: int, step: int) -> list[torch.Generator]:
    return item_generators(seed, epoch, step, range(len(x)))


def test_perlin_noise_is_smooth_seeded_and_any_size() -> None:
    a = perlin(37, 53, (4, 2), batch_generator(0, 0, 0))
    assert a.shape == (37, 53) and torch.equal(a, perlin(37, 53, (4, 2), batch_generator(0, 0, 0)))
    assert a.abs().max() <= 1.5 and a.std() > 0.1
    assert (a[1:] - a[:-1]).abs().max() < 0.5  # neighbours differ little: noise with structure, not white noise
    masks = [perlin_mask(64, 64, batch_generator(1, 0, i)) for i in range(40)]
    coverage = torch.stack([m.mean() for m in masks])
    assert set(torch.unique(torch.stack(masks)).tolist()) <= {0.0, 1.0}
    assert 0.0 < float(coverage.mean()) < 0.5 and float(coverage.max()) > 0.05


def test_defects_change_only_pixels_inside_their_masks_and_repeat_for_the_same_step() -> None:
    x = torch.rand(32, 3, 40, 56)
    simulator = DefectSimulator()
    out, masks = simulator(x, _each(x, 0, 2, 5))
    again, masks_again = simulator(x, _each(x, 0, 2, 5))
    assert torch.equal(out, again) and torch.equal(masks, masks_again)
    assert masks.shape == (32, 1, 40, 56) and out.shape == x.shape
    changed = (out - x).abs().amax(1, keepdim=True) > 0
    assert not (changed & (masks == 0)).any()
    assert float(changed[masks > 0].float().mean()) > 0.99  # the mask is the painted pixels, not a loose outline
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    other, _ = simulator(x, _each(x, 0, 2, 6))
    assert not torch.equal(out, other)


def test_about_half_of_the_samples_stay_clean() -> None:
    x = torch.rand(400, 1, 24, 24)
    _, masks = DefectSimulator()(x, _each(x, 3, 0, 0))
    defective = float((masks.flatten(1).sum(1) > 0).float().mean())
    assert 0.3 < defective < 0.55  # half are left clean; a few Perlin shapes fall below the threshold


def test_some_defects_blur_the_part_instead_of_painting_over_it() -> None:
    # Stripes one pixel wide: a blur turns them to flat grey (colour kept, detail lost); a texture
    # fill blends the stripes in and a CutPaste patch copies them, so neither is flat and grey.
    x = torch.zeros(400, 3, 32, 32)
    x[..., ::2] = 1.0
    out, masks = DefectSimulator()(x, _each(x, 0, 0, 0))
    inside = masks[:, 0] > 0
    pairs = inside[:, :, 1:] & inside[:, :, :-1]
    steps = (out[..., 1:] - out[..., :-1]).abs().amax(1)
    blurred = [bool(steps[i][pairs[i]].max() < 0.05 and abs(float(out[i][:, inside[i]].mean()) - 0.5) < 0.1)
               for i in range(len(x)) if pairs[i].any()]
    assert 0.08 < sum(blurred) / len(blurred) < 0.3  # about 15 % of the defects (a texture fill with β ≈ 0 rarely)


def test_scars_are_thin_strips_of_the_part_at_every_angle() -> None:
    """A scratch on a real part runs any way; scars painted only upright would teach one direction."""
    import math

    from convae.data.defects import scar

    image = torch.rand(3, 96, 96)
    angles, ratios = [], []
    for generator in item_generators(4, 0, 0, range(80)):
        out, mask = scar(image, generator)
        changed = (out - image).abs().amax(0) > 0
        assert not (changed & (mask == 0)).any() and float(changed[mask > 0].float().mean()) > 0.99
        ys, xs = mask.nonzero(as_tuple=True)
        if len(ys) < 20:  # cut short by the border: no clear direction
            continue
        cov = torch.cov(torch.stack([ys.float(), xs.float()]))
        spread = torch.linalg.eigvalsh(cov)
        ratios.append(float(spread[1] / spread[0]))
        if ratios[-1] > 4:  # long and thin: its direction is clear
            angles.append(math.degrees(0.5 * math.atan2(2 * float(cov[0, 1]), float(cov[1, 1] - cov[0, 0]))) % 180)
    bins = {int(a // 30) for a in angles}
    assert sorted(ratios)[len(ratios) // 2] > 4  # most are strips, not patches
    assert len(angles) > 30 and bins == set(range(6)), sorted(angles)  # every 30° sector is drawn


def test_a_given_source_fills_the_perlin_defects() -> None:
    x = torch.zeros(64, 3, 32, 32)
    red = torch.zeros(1, 3, 50, 50, dtype=torch.uint8)
    red[:, 0] = 255
    out, masks = DefectSimulator(sources=red)(x, _each(x, 0, 0, 0))
    inside = masks.expand_as(out) > 0
    red_share = out[:, 0][inside[:, 0]].mean() / (out[:, 1:][inside[:, 1:]].mean() + 1e-6)
    assert inside.any() and red_share > 2  # jittered, but red: the painted texture came from the source


def test_default_textures_come_from_the_pool_of_training_images() -> None:
    x = torch.zeros(64, 3, 32, 32)
    green = torch.zeros(5, 3, 32, 32, dtype=torch.uint8)
    green[:, 1] = 255
    out, masks = DefectSimulator(pool=green)(x, _each(x, 0, 0, 0))
    inside = (masks > 0).expand_as(out)
    greener = out[:, 1][inside[:, 1]] > out[:, 0][inside[:, 0]] + 0.2
    assert inside.any() and 0.1 < float(greener.float().mean()) < 0.9  # some fills are the pool's, some Perlin


def test_a_training_crop_takes_pool_textures_at_the_parts_own_scale() -> None:
    """On a crop smaller than the parts (--crop), a pool texture is a window of a part, not the part shrunk.

    The pool is a one-pixel checkerboard: shrunk 2× it would blur to flat gray; a window keeps
    every neighbour apart. Perlin textures (the other half of the draws) are smooth either way.
    """
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 255).to(torch.uint8)
    pool = checker.expand(4, 3, 64, 64).contiguous()
    simulator, image = DefectSimulator(pool=pool), torch.zeros(3, 32, 32)
    steps = [float((t[:, 1:] - t[:, :-1]).abs().mean())
             for t in (simulator.texture(image, batch_generator(0, 0, i)) for i in range(30))]
    sharp = sum(step > 0.2 for step in steps)
    assert 5 <= sharp <= 25, steps  # about half the draws are the pool's, each still a full-contrast checkerboard


@pytest.mark.parametrize("world", [2, 3])
def test_torchrun_shards_paint_what_one_process_paints(world: int) -> None:
    """Each process holds a slice of the global batch; its defects are the single process's for those parts."""
    images = (torch.rand(21, 3, 16, 16) * 255).to(torch.uint8)  # 8 + 8 + 5: the last batch splits unevenly
    simulator = DefectSimulator(pool=images)

    def painted(rank: int, processes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batches = Batches(images, 8, shuffle=True, seed=1, epoch=2, shard=(rank, processes))
        return [simulator(x, StepRandom(1, 2, step, step * processes + rank, batches.shard_start(step),
                                        torch.device("cpu")).per_item(len(x)))
                for step, x in enumerate(batches)]

    whole, parts = painted(0, 1), [painted(rank, world) for rank in range(world)]
    assert sum(float(masks.sum() > 0) for _, masks in whole) == len(whole)  # every batch has some defect
    for step, (x, masks) in enumerate(whole):
        assert torch.equal(torch.cat([part[step][0] for part in parts]), x)
        assert torch.equal(torch.cat([part[step][1] for part in parts]), masks)


def test_draems_networks_take_any_size_and_return_it() -> None:
    from convae.models import build_model
    from convae.models.draem import discriminator

    recon = build_model("draem-recon", (3, 37, 53), {"width": 4}).eval()
    disc = discriminator(6, width=4).eval()
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        rebuilt = recon(x)
        logits = disc(torch.cat([x, rebuilt], dim=1))
    assert rebuilt.shape == x.shape and logits.shape == (2, 2, 37, 53)
    # no skip connection: the reconstruction is the decoded 1/16-size code and nothing else
    with torch.no_grad():
        code = recon.encode(x)
        assert code.shape[-2:] == (3, 4) and torch.equal(recon.decode(code)[..., :37, :53], rebuilt)


def test_each_simulated_kind_can_be_painted_alone_and_draws_keep_their_shares() -> None:
    """benchmarks/inspect_simulated_kinds.py asks a run about one kind at a time; training draws them by share."""
    from convae.data.defects import BLUR_SHARE, CUT_PASTE_SHARE, KINDS, PERLIN_SHARE

    image = torch.rand(3, 48, 48)
    simulator = DefectSimulator(pool=(torch.rand(4, 3, 48, 48) * 255).to(torch.uint8))
    for kind in KINDS:
        painted = 0
        for i in range(12):
            out, mask = simulator.paint(image, batch_generator(0, 0, i), kind)
            again, _ = simulator.paint(image, batch_generator(0, 0, i), kind)
            changed = (out - image).abs().amax(0) > 0
            assert torch.equal(out, again) and not (changed & (mask == 0)).any(), kind
            painted += bool(mask.any())
        assert painted >= 6, kind  # a Perlin shape may fall below its threshold now and then, not mostly
    _, mask = simulator.paint(image, batch_generator(0, 0, 1), "blur")
    inside = mask > 0
    out, _ = simulator.paint(image, batch_generator(0, 0, 1), "blur")
    assert (out - out.mean((1, 2), keepdim=True))[:, inside].std() < image[:, inside].std()  # detail lost
    with pytest.raises(ValueError, match="unknown simulated defect 'rust'"):
        simulator.paint(image, batch_generator(0, 0, 0), "rust")
    drawn = [simulator.draw_kind(batch_generator(5, 0, i)) for i in range(2000)]
    shares = {kind: drawn.count(kind) / len(drawn) for kind in (None, *KINDS)}
    expected = {None: 0.5, "perlin": PERLIN_SHARE / 2, "blur": BLUR_SHARE / 2, "cut_paste": CUT_PASTE_SHARE / 2,
                "scar": (1 - PERLIN_SHARE - BLUR_SHARE - CUT_PASTE_SHARE) / 2}
    assert all(abs(shares[k] - expected[k]) < 0.04 for k in expected), shares
