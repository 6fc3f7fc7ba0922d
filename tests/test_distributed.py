"""Distributed training under torchrun (gloo on CPU) gives the single-process result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_torchrun
from PIL import Image

from convae.core.errors import DataError
from convae.data import Batches
from convae.run import load_weights, read_metrics

pytest.importorskip("torch.distributed.run")
pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch was built without gloo")


def _folder(root: Path) -> Path:
    """40 small gray PNGs in two classes (convae holds out 10 % of each class as test)."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(20):
            pixels = (rng.random((8, 8)) * 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / cls / f"{i:02d}.png")
    return root


def _train_args(images: Path, out: Path, epochs: int, resume: bool = False) -> list[str]:
    if resume:
        return ["train", "--out", str(out), "--resume", "--epochs", str(epochs), "--no-progress"]
    return ["train", "--dataset", f"folder:{images}", "--model", "fc", "--model-arg", "hidden=8",
            "--epochs", str(epochs), "--batch-size", "8", "--seed", "5", "--out", str(out), "--no-progress"]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path, cli) -> None:
    images = _folder(tmp_path / "images")
    work = tmp_path / "work"
    work.mkdir()
    done = run_torchrun(work, _train_args(images, work / "ddp", epochs=2))
    code, _, err = cli(*_train_args(images, tmp_path / "single", epochs=2), "--threads", "1")
    assert code == 0, err

    # One run directory, written once: rank 1 wrote nothing of its own.
    assert sorted(p.name for p in work.iterdir()) == ["ddp"]
    assert done.stdout.count("done: ") == 1
    assert "on 2 processes" in done.stderr
    ddp, single = read_metrics(work / "ddp"), read_metrics(tmp_path / "single")
    assert [row["epoch"] for row in ddp] == [1, 2]
    for a, b in zip(ddp, single):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)
    config = json.loads((work / "ddp" / "config.json").read_text())
    assert config["training"]["batch_size"] == 8  # the global batch
    weights_ddp, weights_single = load_weights(work / "ddp" / "model.safetensors"), load_weights(
        tmp_path / "single" / "model.safetensors")
    assert all(torch.allclose(weights_ddp[k], weights_single[k], atol=1e-5) for k in weights_single)

    # Resume works under torchrun too, and still agrees with the single process.
    run_torchrun(work, _train_args(images, work / "ddp", epochs=3, resume=True))
    code, _, err = cli(*_train_args(images, tmp_path / "single", epochs=3, resume=True), "--threads", "1")
    assert code == 0, err
    ddp, single = read_metrics(work / "ddp"), read_metrics(tmp_path / "single")
    assert [row["epoch"] for row in ddp] == [1, 2, 3]
    assert ddp[-1]["train_loss"] == pytest.approx(single[-1]["train_loss"], rel=1e-4)
    assert sorted(p.name for p in work.iterdir()) == ["ddp"]


def test_shards_are_disjoint_and_cover_each_global_batch() -> None:
    images = torch.arange(21, dtype=torch.uint8).reshape(21, 1, 1, 1)
    whole = [b.flatten().tolist() for b in Batches(images, 8, shuffle=True, seed=1, epoch=2)]
    parts = [[b.flatten().tolist() for b in Batches(images, 8, shuffle=True, seed=1, epoch=2, shard=(r, 2))]
             for r in range(2)]
    for step, batch in enumerate(whole):
        assert sorted(parts[0][step] + parts[1][step]) == sorted(batch)
        assert not set(parts[0][step]) & set(parts[1][step])
    with pytest.raises(DataError, match="shard 2 of 2"):
        Batches(images, 8, shuffle=False, seed=0, shard=(2, 2))


def test_torchrun_without_out_is_a_one_line_error(cli, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = cli("train", "--dataset", "mnist-sample", "--epochs", "1")
    assert code == 2 and "under torchrun, give --out" in err


@pytest.mark.slow
def test_classifier_runs_train_under_torchrun_too(tmp_path: Path, cli) -> None:
    """Classifier runs share the loop, so they get DDP: two processes match one with the same global batch."""
    images = _folder(tmp_path / "images")
    # 36 training images, 7 held out for validation: 29 = 3 batches of 8 and a last one of 5, which the two
    # processes split 3 + 2 (each one's mean is weighed by its share, so the step is the global mean's).
    args = ["classify", "train", "--dataset", f"folder:{images}", "--model", "cnn", "--optimizer", "sgd",
            "--epochs", "2", "--batch-size", "8", "--seed", "5", "--no-progress"]
    work = tmp_path / "work"
    work.mkdir()
    done = run_torchrun(work, [*args, "--out", str(work / "ddp")])
    assert "on 2 processes" in done.stderr and done.stdout.count("done: ") == 1
    code, _, err = cli(*args, "--out", tmp_path / "single", "--threads", "1")
    assert code == 0, err
    ddp, single = read_metrics(work / "ddp"), read_metrics(tmp_path / "single")
    assert [row["epoch"] for row in ddp] == [1, 2]
    for a, b in zip(ddp, single):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"])
    weights_ddp = load_weights(work / "ddp" / "model.safetensors")
    weights_single = load_weights(tmp_path / "single" / "model.safetensors")
    assert all(torch.allclose(weights_ddp[k], weights_single[k], atol=1e-5) for k in weights_single)
    assert json.loads((work / "ddp" / "eval-test.json").read_text())["images"] == 4


def test_the_group_is_torn_down_after_the_wrapped_model_is_freed(tmp_path: Path) -> None:
    """A torchrun process's DistributedDataParallel sits in a reference cycle; Ranks.stop collects it before
    destroying the group, so gloo's work objects are not freed at interpreter shutdown (an abort, exit -6,
    now and then). In a fresh interpreter, as a torchrun worker is: only the first wrapper a
    process builds is held by a cycle."""
    script = f"""
import gc, weakref, torch, torch.distributed as dist
from convae.training.ranks import Ranks
dist.init_process_group("gloo", init_method="file://{tmp_path / 'store'}", rank=0, world_size=1)
gc.disable()  # only Ranks.stop may collect
net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
net(torch.randn(4, 3)).sum().backward()
wrapper = weakref.ref(net)
del net
held = wrapper() is not None
Ranks(owns_group=True).stop()
print(held, wrapper() is None, dist.is_initialized())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    held, freed, still_up = done.stdout.split()
    if held != "True":
        pytest.skip("this torch frees DistributedDataParallel without a collection")
    assert (freed, still_up) == ("True", "False")
