"""Corruption statistics, clipping and seeding."""

from __future__ import annotations

import pytest
import torch

from convae.core.errors import ConvaeError
from convae.data.corrupt import batch_generator, parse_corruption


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


def test_gaussian_noise_is_clipped_so_black_pixels_get_brighter_on_average() -> None:
    x = torch.zeros(32, 1, 16, 16)
    y = parse_corruption("gaussian:0.5")(x, batch_generator(0, 0, 0))
    assert y.min() == 0.0 and y.max() <= 1.0
    # Half the draws are clipped to 0; the rest keep |N(0, 0.5)| (mean 0.5·sqrt(2/π)/2 ≈ 0.2 overall).
    assert (y == 0).float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert y.mean().item() == pytest.approx(0.5 * (2 / torch.pi) ** 0.5 / 2, abs=0.02)


@pytest.mark.parametrize("spec", ["gaussian:0.3", "salt-pepper:0.3", "mask:0.3", "gray"])
def test_corruptions_never_touch_their_input_and_keep_dtype_and_device(spec: str) -> None:
    x = torch.rand(4, 3, 10, 10)
    before = x.clone()
    y = parse_corruption(spec)(x, batch_generator(0, 0, 0))
    assert torch.equal(x, before)
    assert y.dtype == x.dtype and y.device == x.device
    assert y.shape == ((4, 1, 10, 10) if spec == "gray" else x.shape)
    assert 0.0 <= y.min() and y.max() <= 1.0


@pytest.mark.parametrize("spec", ["gaussian:0", "salt-pepper:0", "mask:0"])
def test_zero_strength_is_the_identity(spec: str) -> None:
    x = torch.rand(4, 1, 9, 9)
    assert torch.equal(parse_corruption(spec)(x, batch_generator(0, 0, 0)), x)


def test_salt_pepper_only_changes_the_hit_pixels() -> None:
    x = torch.full((16, 1, 20, 20), 0.5)
    y = parse_corruption("salt-pepper:0.3")(x, batch_generator(2, 0, 0))
    changed = y != x
    assert torch.equal(changed, (y == 0) | (y == 1))
    assert changed.float().mean().item() == pytest.approx(0.3, abs=0.03)


def test_mask_is_one_rectangle_per_image_placed_differently() -> None:
    x = torch.ones(32, 1, 20, 20)
    y = parse_corruption("mask:0.25")(x, batch_generator(0, 0, 0))
    corners = set()
    for image in y[:, 0]:
        rows, cols = torch.nonzero(image == 0, as_tuple=True)
        top, left = rows.min().item(), cols.min().item()
        height, width = rows.max().item() - top + 1, cols.max().item() - left + 1
        assert (height, width) == (10, 10) and len(rows) == 100  # one solid 10×10 block: 25% of 20×20
        corners.add((top, left))
    assert len(corners) > 10


def test_gray_keeps_gray_images_and_maps_equal_channels_to_themselves() -> None:
    one = torch.rand(2, 1, 5, 5)
    assert torch.equal(parse_corruption("gray")(one, batch_generator(0, 0, 0)), one)
    same = one.expand(-1, 3, -1, -1)
    assert torch.allclose(parse_corruption("gray")(same, batch_generator(0, 0, 0)), one, atol=1e-6)


def test_spec_aliases_defaults_and_round_trip() -> None:
    assert str(parse_corruption("sp:0.1")) == "salt-pepper:0.1"
    assert str(parse_corruption("cutout")) == "mask:0.25"
    assert str(parse_corruption("Gaussian")) == "gaussian:0.5"
    for spec in ("gaussian:0.25", "salt-pepper:0.2", "mask:0.5", "gray"):
        assert str(parse_corruption(str(parse_corruption(spec)))) == spec


def test_every_epoch_draws_fresh_noise_and_the_test_tag_differs_from_training() -> None:
    x = torch.rand(4, 1, 8, 8)
    noise = parse_corruption("gaussian:0.5")
    draws = [noise(x, batch_generator(0, epoch, 0)) for epoch in (-1, 0, 1)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])


def test_poisson_noise_is_seeded_and_grows_with_the_brightness() -> None:
    from convae.data.corrupt import batch_generator, parse_corruption

    corruption = parse_corruption("poisson:20")
    dark, bright = torch.full((1, 1, 64, 64), 0.05), torch.full((1, 1, 64, 64), 0.45)
    x = torch.cat([dark, bright])
    first, again = corruption(x, batch_generator(3, 0, 0)), corruption(x, batch_generator(3, 0, 0))
    assert torch.equal(first, again)
    assert not torch.equal(first, corruption(x, batch_generator(3, 0, 1)))
    spread = (first - x).std(dim=(1, 2, 3))
    assert spread[1] > 2 * spread[0]  # σ = sqrt(value / peak): 0.15 against 0.05
    assert abs(float(first[1].mean()) - 0.45) < 0.01  # unbiased where it is (almost) never clipped


def test_jpeg_artefacts_are_what_a_jpeg_file_at_that_quality_holds() -> None:
    import io

    import numpy as np
    from PIL import Image

    from convae.data.corrupt import batch_generator, parse_corruption

    x = torch.linspace(0, 1, 3 * 24 * 40).reshape(1, 3, 24, 40).repeat(2, 1, 1, 1)
    x[1] = x[1].flip(-1)
    out = parse_corruption("jpeg:15")(x, batch_generator(0, 0, 0))
    buffer = io.BytesIO()
    Image.fromarray((x[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=15)
    expected = torch.from_numpy(np.asarray(Image.open(buffer)).copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(out[0], expected) and not torch.equal(out[0], x[0])
    gray = parse_corruption("jpeg:15")(x[:, :1], batch_generator(0, 0, 0))
    assert gray.shape == (2, 1, 24, 40)
    blind = parse_corruption("jpeg:10-60")
    assert torch.equal(blind(x, batch_generator(0, 1, 2)), blind(x, batch_generator(0, 1, 2)))


@pytest.mark.parametrize("spec, needle", [("poisson:0", "out of range"), ("jpeg:101", "out of range"),
                                          ("jpeg:60-20", "LOW below HIGH"), ("poisson:lots", "not a number")])
def test_bad_poisson_and_jpeg_specs_are_one_line(spec: str, needle: str, cli, tmp_path) -> None:
    code, _, err = cli("train", "--dataset", "mnist-sample", "--task", "denoise", "--noise", spec, "--epochs", "1",
                       "--out", tmp_path / "run")
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
