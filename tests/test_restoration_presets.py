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


def test_blind_noise_on_patches_resumes_bit_identical_after_a_stop_mid_epoch(cli, bars: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    args = ("train", "--dataset", f"folder:{bars}", "--task", "denoise", "--noise", "gaussian:0.0-0.2",
            "--patch", "8", "--model-arg", "width=8", "--model-arg", "levels=1", "--epochs", "2",
            "--batch-size", "8", "--threads", "1", "--no-progress", "--deterministic", "--device", "cpu", "--out")
    code, _, err = cli(*args, str(tmp_path / "whole"))
    assert code == 0, err
    code, out, err = cli(*args, str(tmp_path / "cut"), "--max-time", "0.001s")
    assert code == 0 and "stopped on time" in out and "at step 1 of" in out, (out, err)
    code, _, err = cli(*args, str(tmp_path / "cut"), "--resume")
    assert code == 0, err
    whole, cut = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "cut"))
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
    config = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert config["model"]["name"] == "unet" and "gaussian:0-0.2" in json.dumps(config), config


def test_bce_is_refused_for_an_unbounded_output(cli, bars: Path, tmp_path: Path) -> None:
    code, _, err = cli("train", "--dataset", f"folder:{bars}", "--model", "dncnn", "--loss", "bce",
                       "--out", str(tmp_path / "r"), "--no-progress")
    assert code == 2 and "no Sigmoid" in err and not (tmp_path / "r").exists()


def test_restoration_tasks_default_to_the_residual_unet_and_reconstruction_keeps_conv(tmp_path: Path) -> None:
    from convae.run.config import TrainConfig

    for task, model, schedule in (("denoise", "unet", "cosine"), ("colorize", "unet", "cosine"),
                                  ("reconstruct", "conv", "none")):
        cfg = TrainConfig(dataset="mnist-sample", task=task).resolved()
        assert (cfg.model, cfg.lr_schedule) == (model, schedule), task
    named = TrainConfig(dataset="mnist-sample", task="denoise", model="conv").resolved()
    assert (named.model, named.lr_schedule) == ("conv", "none")  # the old presets stay available by name


@pytest.mark.parametrize("sigma", [0.03, 0.08, 0.15])
def test_the_noise_level_estimate_follows_the_added_noise(sigma: float) -> None:
    from convae.models.restoration import estimate_noise_sigma

    ramp = torch.linspace(0.3, 0.7, 96).view(1, 1, 1, 96).expand(2, 3, 80, 96)
    noisy = ramp + sigma * torch.randn(ramp.shape, generator=torch.Generator().manual_seed(1))
    estimate = estimate_noise_sigma(noisy)
    assert estimate.shape == (2, 1, 1, 1)
    assert torch.allclose(estimate, torch.full_like(estimate, sigma), rtol=0.1), estimate.flatten()


@pytest.mark.parametrize("name", ["dncnn", "unet"])
def test_a_noise_map_model_sees_the_estimated_level_and_keeps_odd_sizes(name: str) -> None:
    model = build_model(name, (3, 37, 53), {"noise_map": True}).eval()
    first = model.decoder[0].body
    first_conv = next(m for m in first.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 4  # the image and its noise-level map
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        assert model(x).shape == x.shape
