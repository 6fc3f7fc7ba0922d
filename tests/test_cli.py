"""The convae command as a user runs it: the happy path and every bad-input case."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


def _one_error_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real CLI training run on the embedded MNIST sample, shared by the read-only tests."""
    run = tmp_path_factory.mktemp("cli") / "run"
    result = subprocess.run(
        [sys.executable, "-m", "convae", "train", "--dataset", "mnist-sample", "--model", "unpool",
         "--epochs", "1", "--out", str(run), "--no-progress"],
        capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "CONVAE_CACHE": str(run.parent / "cache")},
    )
    assert result.returncode == 0, result.stderr
    assert "training unpool on mnist-sample" in result.stderr
    return run


def test_models_lists_every_preset(cli) -> None:
    code, out, _ = cli("models")
    assert code == 0
    for name in ("fc", "conv-pool", "unpool", "unpool-2level", "strided", "conv"):
        assert name in out
    assert "1×7×7" in out and "200" in out


def test_evaluate_json_has_the_metrics(cli, trained: Path) -> None:
    code, out, _ = cli("evaluate", trained, "--json")
    assert code == 0
    result = json.loads(out)
    assert {"mse", "rmse", "psnr", "ssim", "bce"} <= result.keys()
    assert result["rmse"] == pytest.approx(result["mse"] ** 0.5)
    assert 0 < result["rmse"] < 0.35 and 0 < result["ssim"] <= 1
    assert len(result["per_class_mse"]) == 10 and result["images"] == 1000


def test_evaluate_table(cli, trained: Path) -> None:
    code, out, _ = cli("evaluate", trained)
    assert code == 0 and "RMSE" in out and "PSNR" in out and "per class" in out


def test_show_and_report(cli, trained: Path) -> None:
    code, out, _ = cli("show", trained, "-n", "3")
    assert code == 0
    for name in ("reconstructions.png", "loss.png"):
        with Image.open(trained / "figures" / name) as image:
            assert image.width > 200 and image.height > 100
    code, out, _ = cli("report", trained)
    assert code == 0
    page = (trained / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "unpool" in page and "<table>" in page


def test_default_dataset_falls_back_to_the_embedded_sample(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CONVAE_DATA", raising=False)
    code, _, err = cli("train", "--model", "unpool", "--epochs", "1", "--out", tmp_path / "r", "--no-progress")
    assert code == 0, err
    assert "on mnist-sample" in err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["dataset"]["spec"] == "mnist-sample"


def test_config_file_with_flags_winning(cli, tmp_path: Path) -> None:
    config = tmp_path / "train.toml"
    config.write_text('dataset = "mnist-sample"\nmodel = "unpool"\nepochs = 3\nseed = 5\n[model_args]\nmaps = 2\n')
    code, _, err = cli("train", "--config", config, "--epochs", "1", "--out", tmp_path / "r", "--no-progress")
    assert code == 0, err
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["training"]["epochs"] == 1 and saved["training"]["seed"] == 5
    assert saved["model"]["params"]["maps"] == 2


def test_resume_continues_to_more_epochs(cli, tmp_path: Path) -> None:
    run = tmp_path / "r"
    assert cli("train", "--dataset", "mnist-sample", "--model", "unpool", "--epochs", "1", "--out", run, "--no-progress")[0] == 0
    code, _, err = cli("train", "--out", run, "--resume", "--epochs", "2", "--no-progress")
    assert code == 0, err
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--model", "nope", "--dataset", "mnist-sample"], "unknown model 'nope'"),
        (["train", "--model", "unpool", "--model-arg", "maps", "--dataset", "mnist-sample"], "KEY=VALUE"),
        (["train", "--model", "unpool", "--model-arg", "maps=x", "--dataset", "mnist-sample"], "maps='x'"),
        (["train", "--dataset", "imagenet"], "imagenet"),
        (["train", "--channels", "2"], "--channels"),
        (["train", "--resume"], "--resume needs --out"),
        (["train", "--image-size", "axb"], "--image-size"),
    ],
)
def test_bad_train_arguments(cli, args, needle) -> None:
    _one_error_line(*cli(*args)[::2], needle)


def test_dataset_not_on_disk_names_where_it_looked(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CONVAE_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("train", "--dataset", "fashion-mnist", "--data-dir", empty, "--out", tmp_path / "r")
    _one_error_line(code, err, str(empty))
    assert not (tmp_path / "r" / "config.json").exists()


def test_truncated_dataset_file(cli, tmp_path: Path) -> None:
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x10\x00\x00\x00\x1c\x00\x00\x00\x1c" + b"\x00" * 100)
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x10" + b"\x00" * 16)
    code, _, err = cli("train", "--dataset", "mnist", "--data-dir", tmp_path / "data", "--out", tmp_path / "r")
    _one_error_line(code, err, "train-images-idx3-ubyte", "truncated")


def _png_folder(root: Path, bad: str | None = None) -> Path:
    for split in ("train", "test"):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(6):
                Image.new("L", (12, 12), color=40 * i + (100 if cls == "b" else 0)).save(folder / f"{i}.png")
    if bad:
        (root / "train" / "a" / bad).write_bytes(b"this is not a png")
    return root


def test_folder_with_a_corrupt_png_is_skipped_with_its_name(cli, tmp_path: Path) -> None:
    data = _png_folder(tmp_path / "imgs", bad="broken.png")
    code, _, err = cli("train", "--dataset", f"folder:{data}", "--model", "strided", "--epochs", "1",
                       "--out", tmp_path / "r", "--no-progress")
    assert code == 0, err
    assert "broken.png" in err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["dataset"]["train_size"] == 12


def test_empty_folder_dataset(cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = cli("train", "--dataset", f"folder:{tmp_path / 'empty'}", "--out", tmp_path / "r")
    _one_error_line(code, err, "empty")


def test_run_dir_problems(cli, trained: Path, tmp_path: Path) -> None:
    _one_error_line(*cli("evaluate", tmp_path / "missing")[::2], "no such run directory")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((trained / "config.json").read_text())
    _one_error_line(*cli("evaluate", no_weights)[::2], "model.safetensors")
    _one_error_line(*cli("show", no_weights)[::2], "model.safetensors")
    _one_error_line(*cli("report", no_weights)[::2], "model.safetensors")


def test_checkpoint_that_does_not_match_the_model(cli, trained: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((trained / "config.json").read_text())
    config["model"]["params"]["maps"] = 3
    (other / "config.json").write_text(json.dumps(config))
    (other / "model.safetensors").write_bytes((trained / "model.safetensors").read_bytes())
    _one_error_line(*cli("evaluate", other)[::2], "model.safetensors", "encoder.0.0.weight", "(3, 1, 5, 5)")


def test_truncated_weights_file(cli, trained: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((trained / "config.json").read_text())
    (broken / "model.safetensors").write_bytes((trained / "model.safetensors").read_bytes()[:-40])
    _one_error_line(*cli("evaluate", broken)[::2], "model.safetensors")


def test_existing_run_is_not_overwritten(cli, trained: Path) -> None:
    before = (trained / "model.safetensors").read_bytes()
    code, _, err = cli("train", "--dataset", "mnist-sample", "--model", "unpool", "--out", trained)
    _one_error_line(code, err, "already holds a run")
    assert (trained / "model.safetensors").read_bytes() == before


def test_bad_config_file(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3")
    _one_error_line(*cli("train", "--config", bad)[::2], "bad.toml", "TOML")
    _one_error_line(*cli("train", "--config", tmp_path / "none.toml")[::2], "none.toml")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 3\n")
    _one_error_line(*cli("train", "--config", unknown)[::2], "colour")


def test_unknown_flag_is_a_usage_error(cli) -> None:
    code, _, err = cli("train", "--epoch", "3")
    assert code == 2 and "Traceback" not in err and "--epoch" in err


@pytest.mark.skipif(not __import__("shutil").which("chromium"), reason="headless Chromium is not installed")
def test_report_renders_in_headless_chromium(cli, trained: Path, tmp_path: Path) -> None:
    assert cli("show", trained)[0] == 0 and cli("report", trained)[0] == 0
    shot = tmp_path / "report.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1000,1400",
         (trained / "report.html").resolve().as_uri()],
        capture_output=True, timeout=120,
    )
    with Image.open(shot) as image:
        assert image.size == (1000, 1400)
        # A rendered page with figures has many distinct colours; an error page has few.
        assert len(image.convert("RGB").getcolors(1 << 20) or []) > 50
