"""Denoising and colorization: classical baselines, evaluation numbers, sizes, and the CLI verbs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convae.applications.restore import (
    ColourTable,
    DenoiseFilter,
    choose_denoise_filter,
    gaussian_filter,
    median_filter,
    plan_size,
    restoration_metrics,
    restore_tensor,
)
from convae.applications.restore.baselines import _median_windows
from convae.core.errors import ModelError
from convae.data import ImageSet
from convae.data.corrupt import batch_generator, gray, parse_corruption
from convae.models import PRESETS, build_model
from convae.models.codec import CODEC_PRESETS
from convae.models.draem import INSPECT_PRESETS
from convae.run import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


# -- classical filters ---------------------------------------------------------------------


def test_gaussian_filter_matches_scipy_and_keeps_constants() -> None:
    from scipy.ndimage import gaussian_filter as scipy_gaussian

    x = torch.rand(2, 3, 17, 13, dtype=torch.float64)
    for sigma in (0.5, 1.4, 2.8):
        ours = gaussian_filter(x, sigma)
        radius = math.ceil(3 * sigma)
        expected = scipy_gaussian(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", radius=(0, 0, radius, radius))
        assert np.allclose(ours.numpy(), expected, atol=1e-10)
    flat = torch.full((1, 1, 8, 8), 0.3)
    assert torch.allclose(gaussian_filter(flat, 2.0), flat)


def test_median_filter_removes_isolated_specks_and_both_paths_agree() -> None:
    x = torch.full((1, 1, 9, 9), 0.5)
    x[0, 0, 4, 4] = 1.0
    x[0, 0, 0, 0] = 0.0
    assert torch.equal(median_filter(x, 3), torch.full((1, 1, 9, 9), 0.5))
    noisy = torch.rand(3, 2, 11, 7)
    for size in (3, 5, 7):
        assert torch.equal(median_filter(noisy, size), _median_windows(noisy, size))


def _constant_set(value: int, n: int = 40, channels: int = 1, size: int = 16) -> ImageSet:
    images = torch.full((n, channels, size, size), value, dtype=torch.uint8)
    return ImageSet(images, torch.zeros(n, dtype=torch.int64), ["c"], "test", "constant")


def test_filter_choice_on_constructed_cases() -> None:
    # Gaussian noise on flat images: the widest blur removes the most noise.
    flat = _constant_set(128).images
    choice = choose_denoise_filter(flat, parse_corruption("gaussian:0.2"), 0, 256)
    assert choice["best"] == DenoiseFilter("gaussian", 2.8)
    assert choice["families"]["gaussian"]["param"] == 2.8
    # Salt and pepper: a median filter wins, by far.
    choice = choose_denoise_filter(flat, parse_corruption("salt-pepper:0.2"), 0, 256)
    assert choice["best"].family == "median"
    assert choice["families"]["median"]["val_psnr"] > choice["families"]["gaussian"]["val_psnr"] + 10


class _Constant(torch.nn.Module):
    """A 'model' that outputs one gray value whatever it sees."""

    def __init__(self, value: float, channels: int = 1) -> None:
        super().__init__()
        self.value, self.channels = value, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], self.channels, *x.shape[-2:]), self.value)


def test_restoration_metrics_against_hand_computed_values() -> None:
    data = _constant_set(128, n=300)
    clean = data.images.float() / 255
    noise = parse_corruption("gaussian:0.3")
    blur = DenoiseFilter("gaussian", 1.0)
    result = restoration_metrics(_Constant(128 / 255), data, noise, seed=5, chunk=256, baselines={"baseline": blur})
    # The same convention as the trainer: chunks of 256 corrupted with (seed, -1, chunk).
    noisy = torch.cat([noise(clean[i : i + 256], batch_generator(5, -1, i // 256)) for i in (0, 256)])
    input_mse = (noisy - clean).pow(2).mean().item()
    baseline_mse = (blur(noisy) - clean).pow(2).mean().item()
    assert result["input_mse"] == pytest.approx(input_mse, rel=1e-6)
    assert result["input_psnr"] == pytest.approx(10 * math.log10(1 / input_mse), rel=1e-6)
    assert result["baseline_mse"] == pytest.approx(baseline_mse, rel=1e-6)
    assert result["baseline_mse"] < result["input_mse"] / 5
    assert result["mse"] == pytest.approx(0.0, abs=1e-12) and result["ssim"] == pytest.approx(1.0)
    assert result["images"] == 300 and set(result["per_class_mse"]) == {"c"}


def test_colour_table_recovers_colours_that_follow_from_gray() -> None:
    red, blue = torch.tensor([0.8, 0.2, 0.2]), torch.tensor([0.1, 0.2, 0.9])
    x = torch.zeros(6, 3, 4, 4)
    x[:3] = red.view(3, 1, 1)
    x[3:] = blue.view(3, 1, 1)
    table = ColourTable().fit(x)
    assert torch.allclose(table(gray(x)), x, atol=1e-6)
    # An unseen gray level stays gray.
    assert torch.allclose(table(torch.full((1, 1, 2, 2), 0.99)), torch.full((1, 3, 2, 2), 0.99))


# -- sizes the models accept ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(set(PRESETS) - INSPECT_PRESETS))  # DRAEM refuses other channels (test_models)
@pytest.mark.parametrize("size", [(28, 28), (30, 41), (9, 13)])
def test_any_image_size_comes_back_at_its_size_with_the_output_channels(name: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, (1, 28, 28), None, 3).eval()
    plan = plan_size(model, (1, 28, 28), *size)
    out = restore_tensor(model, torch.rand(1, 1, *size), plan)
    assert out.shape == (1, 3, *size)
    assert 0 <= out.min() and out.max() <= 1
    if size == (28, 28):
        assert plan.how == "native"
    elif name in ("fc", "conv"):
        assert plan.how == "resize"  # a dense layer: one size only
    else:
        assert plan.how in ("pad", "native") and plan.size[0] >= size[0] and plan.size[1] >= size[1]


def test_padding_does_not_change_a_convolutional_result_inside() -> None:
    torch.manual_seed(0)
    model = build_model("strided", (1, 28, 28), None, 1).eval()
    x = torch.rand(1, 1, 32, 32)
    whole = restore_tensor(model, x, plan_size(model, (1, 28, 28), 32, 32))
    cropped = restore_tensor(model, x[..., :30, :30], plan_size(model, (1, 28, 28), 30, 30))
    # Away from the padded border the pixels are the same.
    assert torch.allclose(whole[..., :24, :24], cropped[..., :24, :24], atol=1e-6)


# -- end to end through the CLI ------------------------------------------------------------


@pytest.fixture(scope="module")
def denoise_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from convae.training import TrainConfig, Trainer

    run = tmp_path_factory.mktemp("restore") / "denoise"
    cfg = TrainConfig(dataset="mnist-sample", model="strided", model_args={"channels": (16, 16)}, epochs=3,
                      batch_size=64, lr=5e-3, task="denoise", noise="salt-pepper:0.2", seed=1, threads=1)
    Trainer(cfg, run, progress=False).fit()
    return run


def _rgb_folder(root: Path) -> Path:
    """PATH/{train,test}/{warm,cool}/*.png: 12×12 RGB images whose colour follows their class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 48), ("test", 12)):
        for name, tint in (("warm", (1.0, 0.6, 0.3)), ("cool", (0.3, 0.6, 1.0))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                level = rng.uniform(0.3, 1.0, size=(12, 12, 1))
                pixels = np.clip(level * np.array(tint) * 255, 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "RGB").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def colorize_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from convae.training import TrainConfig, Trainer

    base = tmp_path_factory.mktemp("colour")
    data = _rgb_folder(base / "data")
    run = base / "colorize"
    cfg = TrainConfig(dataset=f"folder:{data}", model="conv-pool", epochs=30, batch_size=16, lr=5e-3, task="colorize",
                      seed=0, threads=1)
    Trainer(cfg, run, progress=False).fit()
    return run, data


def test_denoise_evaluate_reports_model_input_and_baseline(denoise_run: Path, cli) -> None:
    code, stdout, _ = cli("evaluate", denoise_run, "--json", "--device", "cpu")
    assert code == 0
    result = json.loads(stdout)
    for key in ("mse", "rmse", "psnr", "ssim", "bce", "l1", "per_class_mse", "input_psnr", "input_ssim",
                "baseline_psnr", "baseline_ssim", "baseline", "baselines"):
        assert key in result, key
    assert result["task"] == "denoise" and result["corruption"] == "salt-pepper:0.2"
    # Scored on exactly the corrupted test images the trainer's test loss used.
    assert result["mse"] == pytest.approx(read_metrics(denoise_run)[-1]["test_loss"], rel=1e-6)
    assert "median" in result["baseline"] and set(result["baselines"]) == {"gaussian", "median"}
    assert result["baseline_psnr"] > result["input_psnr"] + 5
    chosen = max(result["baselines"].values(), key=lambda b: b["val_psnr"])
    assert result["baseline"].startswith(chosen["filter"]) and result["baseline_psnr"] == chosen["psnr"]
    code, stdout, _ = cli("evaluate", denoise_run, "--device", "cpu")
    assert code == 0 and "baseline: median filter" in stdout and "convae" in stdout and "dB" in stdout


def test_show_draws_corrupted_restored_clean(denoise_run: Path, cli) -> None:
    code, stdout, _ = cli("show", denoise_run, "-n", "3", "--device", "cpu")
    assert code == 0
    figure = denoise_run / "figures" / "restorations.png"
    assert figure.exists() and str(figure) in stdout
    assert Image.open(figure).size[0] > 100


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_cli_denoise_writes_pngs_and_names_the_bad_file(denoise_run: Path, tmp_path: Path, cli) -> None:
    rng = np.random.default_rng(0)
    digit = _write(tmp_path / "in" / "digit.png", rng.integers(0, 256, (28, 28), dtype=np.uint8))
    wide = _write(tmp_path / "in" / "wide.png", rng.integers(0, 256, (33, 50, 3), dtype=np.uint8))
    _write(tmp_path / "folder" / "sub" / "deep.jpg", rng.integers(0, 256, (20, 20), dtype=np.uint8))
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not a png at all")
    out = tmp_path / "out"
    code, stdout, stderr = cli("denoise", denoise_run, digit, wide, broken, tmp_path / "folder", "--out", out,
                               "--device", "cpu")
    assert code == 2
    assert "broken.png" in stderr and "1 of 4 image(s) failed" in stderr
    assert Image.open(out / "digit.png").size == (28, 28) and Image.open(out / "digit.png").mode == "L"
    assert Image.open(out / "wide.png").size == (50, 33) and Image.open(out / "wide.png").mode == "L"
    assert Image.open(out / "sub" / "deep.png").size == (20, 20)
    assert "converted RGB to gray" in stdout
    assert not (out / "broken.png").exists()
    # A clean digit with salt-and-pepper specks comes back closer to the clean digit.
    from convae.data import load_dataset

    clean = load_dataset("mnist-sample", "test").images[0, 0].numpy()
    specks = clean.copy()
    mask = rng.random(clean.shape)
    specks[mask < 0.1] = 0
    specks[mask > 0.9] = 255
    _write(tmp_path / "sp" / "specks.png", specks)
    code, _, _ = cli("denoise", denoise_run, tmp_path / "sp", "--out", out, "--device", "cpu")
    restored = np.asarray(Image.open(out / "specks.png"), dtype=np.float64)
    assert code == 0
    assert np.mean((restored - clean) ** 2) < np.mean((specks.astype(np.float64) - clean) ** 2)


def test_restore_commands_refuse_the_wrong_kind_of_run(denoise_run: Path, tmp_path: Path, cli) -> None:
    image = _write(tmp_path / "a.png", np.zeros((8, 8), dtype=np.uint8))
    code, _, stderr = cli("colorize", denoise_run, image, "--out", tmp_path / "o")
    assert code == 2 and "denoise run, not a colorize run" in stderr and "Traceback" not in stderr
    code, _, stderr = cli("denoise", denoise_run, tmp_path / "missing.png", "--out", tmp_path / "o")
    assert code == 2 and "missing.png: no such file" in stderr


def test_colorize_trains_one_channel_to_three_and_beats_gray(colorize_run: tuple[Path, Path], cli) -> None:
    run, data = colorize_run
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "colorize" and config["training"]["noise"] == "gray"
    assert config["model"]["input_shape"] == [1, 12, 12] and config["model"]["out_channels"] == 3
    code, stdout, _ = cli("evaluate", run, "--json", "--device", "cpu")
    assert code == 0
    result = json.loads(stdout)
    # The input baseline is the gray image replicated to RGB, computed here by hand.
    images = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1)
                          for c in ("cool", "warm") for p in sorted((data / "test" / c).glob("*.png"),
                                                                   key=lambda p: p.name)])
    clean = images.float() / 255
    assert result["images"] == 24
    expected = (gray(clean).expand(-1, 3, -1, -1) - clean).pow(2).mean().item()
    assert result["input_mse"] == pytest.approx(expected, rel=1e-5)
    assert "gray levels" in result["baseline"]
    assert result["psnr"] > result["input_psnr"]


def test_cli_colorize_gray_and_rgb_images_of_other_sizes(colorize_run: tuple[Path, Path], tmp_path: Path, cli) -> None:
    run, _ = colorize_run
    gray_image = _write(tmp_path / "g.png", np.linspace(0, 255, 20 * 16).astype(np.uint8).reshape(20, 16))
    rgb_image = _write(tmp_path / "c.bmp", np.random.default_rng(1).integers(0, 256, (12, 12, 3), dtype=np.uint8))
    code, stdout, stderr = cli("colorize", run, gray_image, rgb_image, "--out", tmp_path / "out", "--device", "cpu")
    assert code == 0, stderr
    coloured = Image.open(tmp_path / "out" / "g.png")
    assert coloured.mode == "RGB" and coloured.size == (16, 20)
    assert Image.open(tmp_path / "out" / "c.png").size == (12, 12)
    assert "RGB to gray" in stdout


def test_same_names_get_suffixes_and_inputs_are_never_overwritten(denoise_run: Path, tmp_path: Path, cli) -> None:
    first = _write(tmp_path / "a" / "x.png", np.zeros((28, 28), dtype=np.uint8))
    second = _write(tmp_path / "b" / "x.png", np.full((28, 28), 255, dtype=np.uint8))
    code, stdout, _ = cli("denoise", denoise_run, first, second, "--out", tmp_path / "out", "--device", "cpu")
    assert code == 0 and (tmp_path / "out" / "x.png").exists() and (tmp_path / "out" / "x-2.png").exists()
    before = first.read_bytes()
    code, _, stderr = cli("denoise", denoise_run, first, "--out", tmp_path / "a", "--device", "cpu")
    assert code == 2 and "refusing to overwrite the input" in stderr and first.read_bytes() == before


def test_a_codec_has_no_colour_head() -> None:
    with pytest.raises(ModelError, match="Codec has no colour output head"):
        build_model("codec", (1, 16, 16), None, 3, "chroma")


# -- the chroma output head of colorization ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(set(PRESETS) - CODEC_PRESETS - INSPECT_PRESETS))
def test_chroma_output_keeps_the_gray_input_as_its_luma(name: str) -> None:
    from convae.models.heads import LumaKeepingAutoEncoder, luma

    torch.manual_seed(0)
    plain = build_model(name, (1, 16, 16), None, 3)
    model = build_model(name, (1, 16, 16), None, 3, "chroma").eval()
    assert isinstance(model, LumaKeepingAutoEncoder) and not isinstance(plain, LumaKeepingAutoEncoder)
    assert list(model.state_dict()) == list(plain.state_dict())  # no new weights: old runs still load
    sharp = build_model(name, (1, 16, 16), None, 3, "chroma:0").eval()
    sharp.load_state_dict(model.state_dict())
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        out, out_sharp = model(x), sharp(x)
        rgb = model.decode(model.encode(x))
    assert out.shape == out_sharp.shape == (4, 3, 16, 16)
    assert torch.allclose(luma(out), x, atol=1e-5) and torch.allclose(luma(out_sharp), x, atol=1e-5)
    # The colour is the network's: out − gray is the network's RGB minus its own luma, smoothed by default.
    offset = rgb - luma(rgb)
    assert torch.allclose(out_sharp - x, offset, atol=1e-5)
    assert (out_sharp - x).abs().max() > 1e-5  # it does add colour (a fresh network's is faint)
    assert (out - x).diff(dim=-1).abs().mean() < offset.diff(dim=-1).abs().mean()  # smoother than sharp


def test_chroma_smoothing_spec_and_its_blur() -> None:
    from convae.models.heads import canonical_color_output, parse_color_output, smooth

    assert parse_color_output("chroma") == ("chroma", 4.0, 0.6)
    assert parse_color_output("chroma:0.5") == ("chroma", 0.5, 1.0)  # a stored pre-gain spec keeps its meaning
    assert parse_color_output("chroma:2:0.8") == ("chroma", 2.0, 0.8)
    assert parse_color_output(None) == ("rgb", 0.0, 1.0) and canonical_color_output("chroma") == "chroma:4:0.6"
    assert canonical_color_output("chroma:1.5") == "chroma:1.5:1"
    flat = torch.full((1, 3, 9, 9), 0.25)
    assert torch.allclose(smooth(flat, 1.5), flat)  # a constant stays constant, edges included
    spike = torch.zeros(1, 1, 15, 15)
    spike[0, 0, 7, 7] = 1.0
    blurred = smooth(spike, 1.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5) and blurred.max() < 0.2


def test_chroma_output_refuses_other_channel_counts() -> None:
    from convae.core.errors import ModelError

    with pytest.raises(ModelError, match="1 gray channel to RGB"):
        build_model("strided", (3, 16, 16), None, 3, "chroma")
    with pytest.raises(ModelError, match="color output must be rgb, chroma"):
        build_model("strided", (1, 16, 16), None, 3, "hsv")
    with pytest.raises(ModelError, match="SIGMA and GAIN must be numbers"):
        build_model("strided", (1, 16, 16), None, 3, "chroma:wide")
    with pytest.raises(ModelError, match="GAIN must be in"):
        build_model("strided", (1, 16, 16), None, 3, "chroma:2:1.5")
    with pytest.raises(ModelError, match="color output must be rgb, chroma"):
        build_model("strided", (1, 16, 16), None, 3, "chroma:2:0.5:1")


def test_chroma_gain_shrinks_the_colour_at_inference_only() -> None:
    from convae.models.heads import luma

    torch.manual_seed(0)
    model = build_model("strided", (1, 12, 12), None, 3, "chroma:0:0.5")
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        model.train()
        full = model(x) - x
        model.eval()
        shrunk = model(x) - x
    assert full.abs().max() > 1e-4
    assert torch.allclose(shrunk, 0.5 * full, atol=1e-6)  # eval: half the training-mode colour
    assert torch.allclose(luma(model(x).detach()), x, atol=1e-5)  # the luma is still the input


def test_colorize_run_records_chroma_and_a_run_without_it_loads_plain(colorize_run: tuple[Path, Path]) -> None:
    from convae.models.heads import LumaKeepingAutoEncoder
    from convae.run import load_model, network_from_config

    run, _ = colorize_run
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["color_output"] == "chroma:4:0.6" and config["training"]["color_output"] == "chroma:4:0.6"
    model, _ = load_model(run)
    assert isinstance(model, LumaKeepingAutoEncoder)
    older = {**config, "model": {k: v for k, v in config["model"].items() if k != "color_output"}}
    assert not isinstance(network_from_config(older), LumaKeepingAutoEncoder)


def test_cli_colorize_output_has_the_input_gray_as_luma(colorize_run: tuple[Path, Path], tmp_path: Path, cli) -> None:
    run, _ = colorize_run
    levels = np.random.default_rng(2).integers(90, 170, (12, 12), dtype=np.uint8)
    code, _, stderr = cli("colorize", run, _write(tmp_path / "g.png", levels), "--out", tmp_path / "out",
                          "--device", "cpu")
    assert code == 0, stderr
    rgb = np.asarray(Image.open(tmp_path / "out" / "g.png")).astype(np.float64)
    assert rgb.std(axis=2).max() > 2  # coloured, not gray
    inside = ((rgb > 0) & (rgb < 255)).all(axis=2)  # pixels no channel was clipped in
    assert inside.sum() >= 10
    y = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(y - levels)[inside].max() <= 1.0  # up to the rounding of each channel to 8 bits


def test_color_output_flag_rgb_and_its_checks(tmp_path: Path, cli) -> None:
    data = _rgb_folder(tmp_path / "data")
    code, _, stderr = cli("train", "--dataset", f"folder:{data}", "--model", "strided", "--epochs", "1",
                          "--task", "colorize", "--color-output", "rgb", "--threads", "1", "--no-progress",
                          "--out", tmp_path / "rgb")
    assert code == 0, stderr
    config = json.loads((tmp_path / "rgb" / "config.json").read_text())
    assert config["model"]["color_output"] == "rgb"
    code, _, stderr = cli("train", "--dataset", f"folder:{data}", "--epochs", "1", "--task", "colorize",
                          "--color-output", "lab", "--no-progress", "--out", tmp_path / "bad")
    assert code == 2 and "--color-output: color output must be rgb, chroma or chroma:SIGMA[:GAIN]" in stderr
    code, _, stderr = cli("train", "--dataset", f"folder:{data}", "--epochs", "1", "--color-output", "chroma",
                          "--no-progress", "--out", tmp_path / "bad2")
    assert code == 2 and "--color-output is for --task colorize, not reconstruct" in stderr
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()
