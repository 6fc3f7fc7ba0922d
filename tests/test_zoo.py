"""Bundled models (zoo:NAME): listed, used like a run directory from anywhere, checked, never written."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from conftest import write_bars
from PIL import Image

from convae.core.errors import RunError
from convae.run import Run
from convae.run.zoo import PACKAGE_ZOO, file_sha256

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zoo folder holding one tiny denoiser trained here, with its card."""
    from convae.models import parse_model_args
    from convae.training import TrainConfig, Trainer

    root = tmp_path_factory.mktemp("zoo-src")
    bars = write_bars(root / "bars", {"train": 8, "test": 4}, seed=2)
    run = root / "run"
    cfg = TrainConfig(dataset=f"folder:{bars}", task="denoise", noise="gaussian:0.1", model="unet",
                      model_args=parse_model_args("unet", ["width=4", "levels=1"]), epochs=1, batch_size=8,
                      threads=1, logger="none")
    Trainer(cfg, run, progress=False).fit()
    zoo = root / "zoo" / "tiny-denoise"
    zoo.mkdir(parents=True)
    for item in ("config.json", "model.safetensors"):
        shutil.copyfile(run / item, zoo / item)
    card = {"name": "tiny-denoise", "task": "denoise", "summary": "a test model", "trained_on": "bars",
            "figures": {"val": "1 dB"}, "sha256": file_sha256(zoo / "model.safetensors")}
    (zoo / "card.json").write_text(json.dumps(card))
    return zoo.parent


@pytest.fixture
def zoo_env(tiny_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny zoo as the package's, a fresh cache, and no network at all."""
    work = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, work)
    monkeypatch.setenv("CONVAE_ZOO", str(work))
    monkeypatch.setenv("CONVAE_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise AssertionError("the zoo must not touch the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return work


def _noisy(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (19, 27, 3), dtype=np.uint8)).save(path)
    return path


def test_convae_zoo_lists_and_shows_the_bundled_models(cli, zoo_env: Path) -> None:
    code, out, err = cli("zoo")
    assert code == 0, err
    assert "zoo:tiny-denoise" in out and "a test model" in out and "1 dB" in out
    code, out, err = cli("zoo", "zoo:tiny-denoise")
    assert code == 0 and json.loads(out)["trained_on"] == "bars", err
    code, _, err = cli("zoo", "nope")
    assert code == 2 and "zoo:nope: no such bundled model" in err and "zoo:tiny-denoise" in err


def test_a_zoo_model_denoises_from_another_folder_and_its_files_stay_untouched(
        cli, zoo_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p.name: p.read_bytes() for p in (zoo_env / "tiny-denoise").iterdir()}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    noisy = _noisy(elsewhere / "my.png")
    code, out, err = cli("denoise", "zoo:tiny-denoise", str(noisy), "--out", "clean")
    assert code == 0, err
    assert Image.open(elsewhere / "clean" / "my.png").size == (27, 19)
    assert {p.name: p.read_bytes() for p in (zoo_env / "tiny-denoise").iterdir()} == before
    run = Run.open("zoo:tiny-denoise")
    assert run.config.task == "denoise" and run.model() is not None


@pytest.mark.parametrize("where", ["package", "cache"])
def test_a_tampered_zoo_weights_file_is_refused_in_one_line(cli, zoo_env: Path, tmp_path: Path, where: str) -> None:
    if where == "cache":
        Run.open("zoo:tiny-denoise")  # makes the checked copy
        [weights] = (tmp_path / "cache" / "zoo").glob("tiny-denoise-*/model.safetensors")
    else:
        weights = zoo_env / "tiny-denoise" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x10
    weights.write_bytes(bytes(data))
    code, out, err = cli("denoise", "zoo:tiny-denoise", str(_noisy(tmp_path / "n.png")), "--out", str(tmp_path / "o"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "does not match its card" in err and "not loaded" in err
    assert not (tmp_path / "o").exists()


def test_zoo_names_are_checked(zoo_env: Path) -> None:
    for bad in ("zoo:", "zoo:../x", "zoo:a/b"):
        with pytest.raises(RunError, match="zoo:NAME"):
            Run.open(bad)


def test_the_bundled_photo_denoiser_loads_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The real bundled model: its card matches its weights, and it denoises a noisy picture with no network."""
    import torch

    monkeypatch.delenv("CONVAE_ZOO", raising=False)
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(AssertionError("network")))
    card = json.loads((PACKAGE_ZOO / "photo-denoise" / "card.json").read_text())
    assert file_sha256(PACKAGE_ZOO / "photo-denoise" / "model.safetensors") == card["sha256"]
    assert (PACKAGE_ZOO / "photo-denoise" / "model.safetensors").stat().st_size < 8 * 2**20  # a few MB
    model = Run.open("zoo:photo-denoise").model()
    rng = torch.Generator().manual_seed(0)
    clean = torch.linspace(0.2, 0.8, 40).view(1, 1, 1, 40).expand(1, 3, 37, 40).contiguous()
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=rng)).clamp(0, 1)
    with torch.no_grad():
        restored = model(noisy)
    assert restored.shape == noisy.shape
    assert (restored - clean).pow(2).mean() < 0.5 * (noisy - clean).pow(2).mean()


def test_the_wheel_carries_the_bundled_models(tmp_path: Path) -> None:
    """A fresh install gets the zoo: the built wheel holds every bundled model's three files."""
    import os
    import subprocess
    import sys
    import zipfile

    repo, source = Path(__file__).resolve().parents[1], tmp_path / "source"  # built from a copy: no build/ in the checkout
    shutil.copytree(repo / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for item in ("pyproject.toml", "README.md"):
        shutil.copyfile(repo / item, source / item)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path / "wheel")], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PIP_NO_INDEX": "1"})
    assert done.returncode == 0, done.stderr
    names = set(zipfile.ZipFile(next((tmp_path / "wheel").glob("convae-*.whl"))).namelist())
    bundled = sorted(p.name for p in PACKAGE_ZOO.iterdir() if (p / "card.json").exists())
    assert bundled, "no bundled model found"
    for name in bundled:
        for item in ("card.json", "config.json", "model.safetensors"):
            assert f"convae/zoo/{name}/{item}" in names, (name, item)
