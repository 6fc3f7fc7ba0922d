"""Residual denoisers (dncnn, unet) and blind noise ranges: any size in, the same size out; seeded σ per image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_bars
from PIL import Image

from convae.core.errors import ConvaeError
from convae.data.corrupt import batch_generator, parse_corruption
from convae.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["dncnn", "unet"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 37, 53), (3, 9, 130)])
def test_residual_presets_return_exactly_the_input_size_as_input_minus_noise(name, shape) -> None:
    model = build_model(name, shape).eval()
    x = torch.rand(2, *shape)
    with torch.no_grad():
        y = model(x)
    with torch.no_grad():
        noise = model.decoder[0].body(x)
    assert y.shape == x.shape and torch.allclose(y, x - noise)  # the output is the input minus the predicted noise
    colour = build_model(name, (1, 20, 21), out_channels=3)  # colorize: gray in, RGB out
    assert colour(torch.rand(1, 1, 20, 21)).shape == (1, 3, 20, 21)


def test_blind_gaussian_draws_a_seeded_sigma_per_image() -> None:
    blind = parse_corruption("gaussian:0.0-0.2")
    assert str(blind) == "gaussian:0-0.2" and str(parse_corruption(str(blind))) == str(blind)
    x = torch.full((64, 1, 16, 16), 0.5)
    first, again = blind(x, batch_generator(3, 1, 7)), blind(x, batch_generator(3, 1, 7))
    assert torch.equal(first, again)  # a pure function of (seed, epoch, step): resume draws the same noise
    sigmas = (first - x).flatten(1).std(1)
    assert float(sigmas.min()) < 0.05 and float(sigmas.max()) > 0.15 and float(sigmas.max()) < 0.23
    assert not torch.equal(first, blind(x, batch_generator(3, 1, 8)))
    for bad in ("gaussian:0.3-0.1", "gaussian:0-11", "gaussian:a-b"):
        with pytest.raises(ConvaeError, match="--noise"):
            parse_corruption(bad)


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bars(tmp_path_factory.mktemp("restore-bars"), {"train": 24, "test": 8}, seed=4)


def test_a_dncnn_denoiser_beats_its_input_and_keeps_an_odd_size(cli, bars: Path, tmp_path: Path) -> None:
    run = tmp_path / "dn"
    code, _, err = cli("train", "--dataset", f"folder:{bars}", "--model", "dncnn", "--model-arg", "width=16",
                       "--task", "denoise", "--noise", "gaussian:0.05-0.2", "--epochs", "3", "--batch-size", "8",
                       "--threads", "1", "--no-progress", "--out", str(run))
    assert code == 0, err
    # blind noise is scored at fixed levels of its range, each epoch and in evaluate
    levels = ["gaussian:0.0588", "gaussian:0.098", "gaussian:0.1961"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["noise"] for r in rows[-1]["test_per_level"]] == levels
    assert rows[-1]["test_per_level"][0]["psnr"] > rows[-1]["test_per_level"][2]["psnr"]  # less noise, less error
    assert "gaussian:0.098: " in err
    code, out, err = cli("evaluate", str(run), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["psnr"] > result["input_psnr"] + 0.5, result
    assert [r["noise"] for r in result["per_level"]] == levels
    assert all(r["psnr"] > r["input_psnr"] for r in result["per_level"]), result["per_level"]
    code, out, err = cli("evaluate", str(run))
    assert code == 0 and "at fixed levels" in out and "gaussian:0.1961" in out, err
    odd = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (23, 41), dtype=np.uint8)).save(odd)
    code, out, err = cli("denoise", str(run), str(odd), "--out", str(tmp_path / "clean"))
    assert code == 0, err
    assert Image.open(tmp_path / "clean" / "odd.png").size == (41, 23)


def test_bce_is_refused_for_an_unbounded_output(cli, bars: Path, tmp_path: Path) -> None:
    code, _, err = cli("train", "--dataset", f"folder:{bars}", "--model", "dncnn", "--loss", "bce",
                       "--out", str(tmp_path / "r"), "--no-progress")
    assert code == 2 and "no Sigmoid" in err and not (tmp_path / "r").exists()
