"""The CUDA path: training, resuming, evaluating, detecting, classifying and exporting on a GPU.

Skipped (with the reason) where no CUDA device is present, as in CI; benchmarks/gpu_check.sh
runs them on a GPU machine. Each compares the GPU's numbers with the CPU's on tiny bar images.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import smooth_photo, write_bars

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bars(tmp_path_factory.mktemp("cuda-bars"), {"train": 64, "test": 16}, seed=5)


def _train(cli, bars: Path, out: Path, *extra: str) -> None:
    code, _, err = cli("train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--epochs", "2",
                       "--batch-size", "16", "--normal-classes", "horizontal", "--device", "cuda", "--seed", "0",
                       "--no-progress", "--out", out, *extra)
    assert code == 0, err


@pytest.mark.parametrize("extra", [[], ["--precision", "bf16"], ["--compile"]])
def test_training_on_cuda_learns_and_evaluates_like_the_cpu(cli, bars: Path, tmp_path: Path, extra: list[str]) -> None:
    run = tmp_path / "run"
    _train(cli, bars, run, *extra)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    results = {}
    for device in ("cuda", "cpu"):
        code, out, err = cli("evaluate", run, "--json", "--device", device)
        assert code == 0, err
        results[device] = json.loads(out)
    assert results["cuda"]["mse"] == pytest.approx(results["cpu"]["mse"], rel=1e-3)


def test_resume_on_cuda_continues_the_run(cli, bars: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(cli, bars, run)
    code, _, err = cli("train", "--out", run, "--resume", "--epochs", "3", "--device", "cuda", "--no-progress")
    assert code == 0, err
    assert [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_detect_and_classify_on_cuda_agree_with_the_cpu(cli, bars: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(cli, bars, run)
    scores = {}
    for device in ("cuda", "cpu"):
        code, out, err = cli("detect", run, bars / "test", "--json", "--device", device)
        assert code == 0, err
        scores[device] = [json.loads(line)["score"] for line in out.splitlines()]
    assert scores["cuda"] == pytest.approx(scores["cpu"], abs=1e-4)
    classifier = tmp_path / "cnn"
    code, _, err = cli("classify", "train", "--dataset", f"folder:{bars}", "--model", "cnn", "--epochs", "1",
                       "--device", "cuda", "--out", classifier)
    assert code == 0, err
    labels = {}
    for device in ("cuda", "cpu"):
        code, out, err = cli("classify", "predict", classifier, bars / "test", "--json", "--device", device)
        assert code == 0, err
        labels[device] = [json.loads(line)["label"] for line in out.splitlines()]
    assert labels["cuda"] == labels["cpu"]


def test_batches_stay_on_the_gpu_during_training(bars: Path, tmp_path: Path) -> None:
    from convae.training import TrainConfig, Trainer

    config = TrainConfig(dataset=f"folder:{bars}", model="fc", epochs=1, batch_size=16, device="cuda", seed=0)
    trainer = Trainer(config, tmp_path / "fc", progress=False)
    trainer.fit()
    assert next(trainer.model.parameters()).device.type == "cuda"


def test_a_codec_trained_on_cuda_decodes_its_files_to_the_same_pixels_on_cuda_and_cpu(cli, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(24):
        Image.fromarray(smooth_photo(rng, 32, 32)).save(photos / f"p{i}.png")
    code, _, err = cli("train", "--dataset", f"folder:{photos}", "--model", "codec-hyper", "--model-arg", "width=8",
                       "--model-arg", "latent=8", "--loss", "rd:0.013", "--epochs", "1", "--device", "cuda",
                       "--no-progress", "--logger", "none", "--out", tmp_path / "run")
    assert code == 0, err
    assert cli("encode", tmp_path / "run", photos, "--out", tmp_path / "codes", "--device", "cuda")[0] == 0
    pixels = {}
    for device in ("cuda", "cpu"):
        code, _, err = cli("decode", tmp_path / "run", tmp_path / "codes", "--out", tmp_path / device, "--device", device)
        assert code == 0, err
        pixels[device] = [np.asarray(Image.open(p)) for p in sorted((tmp_path / device).glob("*.png"))]
    assert len(pixels["cpu"]) == 24
    assert all(np.array_equal(a, b) for a, b in zip(pixels["cuda"], pixels["cpu"]))
