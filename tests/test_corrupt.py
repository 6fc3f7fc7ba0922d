"""Corruption statistics, clipping and seeding."""

from __future__ import annotations

import pytest
import torch

from convae.data.corrupt import batch_generator, parse_corruption
from convae.errors import ConvaeError


def _gray_half(n: int = 64, size: int = 32) -> torch.Tensor:
    return torch.full((n, 1, size, size), 0.5)


def test_gaussian_noise_has_the_asked_sigma_and_stays_in_range() -> None:
    x = _gray_half()
    y = parse_corruption("gaussian:0.1")(x, batch_generator(0, 0, 0))
    assert 0.0 <= y.min() and y.max() <= 1.0
    assert (y - x).std().item() == pytest.approx(0.1, rel=0.05)
    assert (y - x).mean().abs().item() < 0.005


def test_salt_pepper_hits_the_asked_fraction_half_each() -> None:
    x = _gray_half(3).expand(-1, 3, -1, -1).contiguous()
    y = parse_corruption("salt-pepper:0.2")(x, batch_generator(0, 0, 0))
    salt = (y == 1).all(1).float().mean().item()
    pepper = (y == 0).all(1).float().mean().item()
    assert salt == pytest.approx(0.1, abs=0.02) and pepper == pytest.approx(0.1, abs=0.02)
    # Channels are hit together: no coloured speckles.
    assert ((y == 1).any(1) == (y == 1).all(1)).all()


def test_mask_zeroes_about_the_asked_area() -> None:
    x = torch.ones(16, 1, 28, 28)
    y = parse_corruption("mask:0.25")(x, batch_generator(1, 0, 0))
    assert (y == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)


def test_gray_is_itu_601_luma() -> None:
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0] = 1.0
    assert torch.allclose(parse_corruption("gray")(x, batch_generator(0, 0, 0)), torch.full((1, 1, 2, 2), 0.299))


@pytest.mark.parametrize("spec", ["gaussian:0.5", "salt-pepper:0.2", "mask:0.3"])
def test_same_seed_epoch_step_gives_the_same_corruption(spec: str) -> None:
    x = torch.rand(8, 1, 28, 28)
    corrupt = parse_corruption(spec)
    first = corrupt(x, batch_generator(3, 1, 7))
    assert torch.equal(first, corrupt(x, batch_generator(3, 1, 7)))
    assert not torch.equal(first, corrupt(x, batch_generator(3, 1, 8)))
    assert not torch.equal(first, corrupt(x, batch_generator(4, 1, 7)))


@pytest.mark.parametrize("spec", ["blur:1", "gaussian:x", "salt-pepper:2"])
def test_bad_specs_are_one_clear_error(spec: str) -> None:
    with pytest.raises(ConvaeError, match="--noise"):
        parse_corruption(spec)
