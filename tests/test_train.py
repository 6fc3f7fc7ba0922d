"""Trainer behaviour through the public API: run directory, resume, determinism, faults."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Callable

import pytest
import torch

import convae.training.tasks as train_module
from convae.core.errors import ConvaeError, RunError
from convae.data import ImageSet
from convae.run import load_model, load_weights, read_metrics
from convae.training import NonFiniteLoss, TrainConfig, Trainer, TrainingInterrupted, scheduled_lr


def _fit(run_dir: Path, digits, resume: bool = False, **overrides) -> dict:
    train, test = digits
    settings = dict(model="unpool", epochs=2, batch_size=64, seed=3, deterministic=True)
    settings.update(overrides)
    trainer = Trainer(TrainConfig(**settings), run_dir, train_set=train, test_set=test, progress=False)
    return trainer.fit(resume=resume)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_weights(run_dir / "model.safetensors")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_directory_holds_everything_to_rebuild_the_model(tmp_path: Path, digits) -> None:
    last = _fit(tmp_path / "run", digits)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.json", "model.safetensors", "state.pt", "metrics.jsonl"}
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["train_loss"] > 0 and r["test_loss"] > 0 and r["images_per_s"] > 0 for r in rows)
    assert rows[-1] == last
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == {
        "name": "unpool",
        "params": {"maps": 1, "pool": 4, "out_activation": "none"},
        "input_shape": [1, 28, 28],
        "out_channels": 1,
        "code_shape": [1, 7, 7],
        "color_output": None,
    }
    assert config["training"]["seed"] == 3 and config["training"]["loss"] == "mse"
    assert config["torch_version"] == torch.__version__
    model, _ = load_model(run)
    x = digits[1].images[:4].float() / 255
    assert model(x).shape == x.shape
    # Training lowered the loss below what the untrained model gives.
    assert rows[-1]["test_loss"] < rows[0]["test_loss"] * 1.05


def test_same_seed_and_deterministic_give_bit_identical_weights(tmp_path: Path, digits) -> None:
    _fit(tmp_path / "a", digits, model="conv", model_args={"width": 8}, epochs=1)
    _fit(tmp_path / "b", digits, model="conv", model_args={"width": 8}, epochs=1)
    _fit(tmp_path / "c", digits, model="conv", model_args={"width": 8}, epochs=1, seed=4)
    assert _same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert not _same(_weights(tmp_path / "a"), _weights(tmp_path / "c"))


def test_resume_after_an_epoch_matches_an_uninterrupted_run(tmp_path: Path, digits) -> None:
    _fit(tmp_path / "straight", digits, epochs=3)
    _fit(tmp_path / "resumed", digits, epochs=1)
    _fit(tmp_path / "resumed", digits, epochs=3, resume=True)
    assert _same(_weights(tmp_path / "straight"), _weights(tmp_path / "resumed"))
    assert read_metrics(tmp_path / "straight")[-1]["train_loss"] == read_metrics(tmp_path / "resumed")[-1]["train_loss"]


def _ctrl_c_at_loss_call(monkeypatch: pytest.MonkeyPatch, n: int) -> Callable[[], None]:
    """Make the n-th loss computation send this process a real SIGINT (a Ctrl-C mid-step); returns an undo."""
    calls = {"n": 0}
    real_loss = train_module.loss_function

    def interrupting(name):
        fn = real_loss(name)

        def wrapped(output, target):
            calls["n"] += 1
            if calls["n"] == n:
                os.kill(os.getpid(), signal.SIGINT)
            return fn(output, target)

        return wrapped

    monkeypatch.setattr(train_module, "loss_function", interrupting)
    return lambda: monkeypatch.setattr(train_module, "loss_function", real_loss)


def test_ctrl_c_mid_epoch_saves_and_resume_is_bit_identical(tmp_path: Path, digits, monkeypatch) -> None:
    _fit(tmp_path / "straight", digits, model="conv", model_args={"width": 8}, epochs=2)
    undo = _ctrl_c_at_loss_call(monkeypatch, 11)  # 8 train steps + 1 test batch in epoch 1, then epoch 2's 2nd step
    with pytest.raises(TrainingInterrupted, match="epoch 2, step 2: checkpoint saved"):
        _fit(tmp_path / "cut", digits, model="conv", model_args={"width": 8}, epochs=2)
    undo()
    _fit(tmp_path / "cut", digits, model="conv", model_args={"width": 8}, epochs=2, resume=True)
    assert _same(_weights(tmp_path / "straight"), _weights(tmp_path / "cut"))
    assert [r["epoch"] for r in read_metrics(tmp_path / "cut")] == [1, 2]


def test_step_checkpoints_resume_bit_identical(tmp_path: Path, digits) -> None:
    _fit(tmp_path / "straight", digits, epochs=2)
    # Stop after epoch 1 plus a few steps: emulate by training 1 epoch with step checkpoints,
    # then resuming; the step checkpoints must not disturb the result.
    _fit(tmp_path / "steps", digits, epochs=1, checkpoint_every=3)
    _fit(tmp_path / "steps", digits, epochs=2, checkpoint_every=3, resume=True)
    assert _same(_weights(tmp_path / "straight"), _weights(tmp_path / "steps"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, digits, monkeypatch) -> None:
    _fit(tmp_path / "run", digits, epochs=1)
    good = _weights(tmp_path / "run")
    real_loss = train_module.loss_function

    def poisoned(name):
        fn = real_loss(name)
        return lambda output, target: fn(output, target) * float("nan")

    monkeypatch.setattr(train_module, "loss_function", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"epoch 2, step 1.*lower --lr"):
        _fit(tmp_path / "run", digits, epochs=2, resume=True)
    assert _same(good, _weights(tmp_path / "run"))
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1]


def test_an_existing_run_is_never_overwritten(tmp_path: Path, digits) -> None:
    _fit(tmp_path / "run", digits, epochs=1)
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(RunError, match="already holds a run"):
        _fit(tmp_path / "run", digits, epochs=1)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path: Path, digits) -> None:
    with pytest.raises(RunError, match="nothing to resume"):
        _fit(tmp_path / "empty", digits, resume=True)


def test_normal_classes_and_validation_split(tmp_path: Path, digits) -> None:
    train, test = digits
    trainer = Trainer(TrainConfig(model="unpool", epochs=1, normal_classes=[3]), tmp_path / "r",
                      train_set=train, test_set=test, progress=False)
    row = trainer.fit()
    assert "val_loss" in row
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    threes = int((train.labels == 3).sum())
    assert config["training"]["normal_classes"] == [3] and config["training"]["val_fraction"] == 0.1
    assert config["dataset"]["train_size"] == threes - round(threes * 0.1)
    with pytest.raises(ConvaeError, match="--normal-classes 12"):
        Trainer(TrainConfig(model="unpool", epochs=1, normal_classes=[12]), tmp_path / "bad",
                train_set=train, test_set=test, progress=False).fit()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss": "huber"}, "--loss"),
        ({"epochs": 0}, "--epochs"),
        ({"lr": -1.0}, "--lr"),
        ({"model": "unpool", "loss": "bce"}, "out_activation=sigmoid"),
        ({"task": "paint"}, "--task"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, digits, overrides, message) -> None:
    with pytest.raises(ConvaeError, match=message) as error:
        _fit(tmp_path / "r", digits, **overrides)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "r" / "config.json").exists()


def test_colorize_needs_colour_data(tmp_path: Path, digits) -> None:
    with pytest.raises(ConvaeError, match="colour images"):
        _fit(tmp_path / "r", digits, task="colorize")


def test_denoise_trains_corrupted_to_clean(tmp_path: Path, digits) -> None:
    row = _fit(tmp_path / "r", digits, model="strided", epochs=1, task="denoise", noise="gaussian:0.3")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["task"] == "denoise" and config["training"]["noise"] == "gaussian:0.3"
    assert row["test_loss"] > 0


def test_colour_dataset_colorize_model_maps_one_channel_to_three(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8, generator=generator)
    data = ImageSet(images, torch.zeros(64, dtype=torch.int64), ["x"], "train", "tiny-rgb")
    trainer = Trainer(TrainConfig(model="conv-pool", epochs=1, task="colorize"), tmp_path / "c",
                      train_set=data, test_set=data, progress=False)
    trainer.fit()
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["model"]["input_shape"] == [1, 12, 12] and config["model"]["out_channels"] == 3


def test_lr_schedule_resume_is_bit_identical_and_recorded(tmp_path: Path, digits, monkeypatch) -> None:
    _fit(tmp_path / "straight", digits, epochs=2, lr_schedule="onecycle")
    undo = _ctrl_c_at_loss_call(monkeypatch, 12)  # 8 train steps + 1 test batch in epoch 1, then mid-epoch 2
    with pytest.raises(TrainingInterrupted, match="epoch 2, step 3"):
        _fit(tmp_path / "cut", digits, epochs=2, lr_schedule="onecycle")
    undo()
    _fit(tmp_path / "cut", digits, epochs=2, resume=True)
    assert _same(_weights(tmp_path / "straight"), _weights(tmp_path / "cut"))
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["training"]["lr_schedule"] == "onecycle"
    constant = _fit(tmp_path / "constant", digits, epochs=2)
    scheduled = read_metrics(tmp_path / "straight")[-1]
    assert scheduled["train_loss"] != constant["train_loss"]


def test_scheduled_lr_shapes() -> None:
    lr, total = 0.01, 100
    assert scheduled_lr("none", lr, 50, total) == lr
    assert scheduled_lr("cosine", lr, 0, total) == pytest.approx(lr)
    assert scheduled_lr("cosine", lr, 50, total) == pytest.approx(lr / 2)
    onecycle = [scheduled_lr("onecycle", lr, step, total) for step in range(total)]
    assert onecycle[0] == pytest.approx(lr / 25) and max(onecycle) == pytest.approx(lr)
    assert onecycle.index(max(onecycle)) == 30 and onecycle[-1] < lr / 1000


def test_unknown_lr_schedule_is_a_one_line_error(tmp_path: Path, digits) -> None:
    with pytest.raises(ConvaeError, match="--lr-schedule"):
        _fit(tmp_path / "r", digits, lr_schedule="step")


def test_training_bce_is_torchs_bce_in_value_and_gradient() -> None:
    """convae.training.losses.binary_cross_entropy (the fast one training uses) against F.binary_cross_entropy."""
    import torch.nn.functional as F

    from convae.training.losses import binary_cross_entropy

    g = torch.Generator().manual_seed(0)
    p = torch.rand(124, 784, generator=g)
    p[0, :6] = torch.tensor([0.0, 1.0, 1e-30, 1 - 1e-7, 0.5, 1e-8])  # the clamps and the gradient floor
    x = torch.rand(124, 784, generator=g)
    x[0, :6] = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.3, 1.0])
    grads = []
    for loss_fn in (F.binary_cross_entropy, binary_cross_entropy):
        leaf = p.clone().requires_grad_(True)
        loss = loss_fn(leaf, x)
        loss.backward()
        grads.append((loss.detach(), leaf.grad))
    (want, want_grad), (got, got_grad) = grads
    assert torch.allclose(got, want, rtol=1e-6, atol=0)
    assert torch.allclose(got_grad, want_grad, rtol=1e-5, atol=1e-12)
    assert torch.isfinite(got_grad).all() and abs(float(got_grad[0, 0])) > 1e6  # the 1e-12 floor, not Inf
