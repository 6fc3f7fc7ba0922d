"""The trainer's speed options: bf16 autocast, thread defaults, device choice."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from convae.core.errors import ConvaeError
from convae.run import read_config
from convae.training import TrainConfig, Trainer, default_threads, pick_device


def test_bf16_autocast_trains_and_is_recorded(tmp_path: Path, digits) -> None:
    train, test = digits
    config = TrainConfig(model="fc", epochs=1, batch_size=64, precision="bf16", threads=1)
    last = Trainer(config, tmp_path / "run", train_set=train, test_set=test, progress=False).fit()
    assert math.isfinite(last["train_loss"]) and 0 < last["test_loss"] < 1
    assert read_config(tmp_path / "run")["training"]["precision"] == "bf16"


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_device_has_bf16_units(tmp_path: Path, digits, monkeypatch,
                                                                      native: bool) -> None:
    import convae.core.device

    monkeypatch.setattr(convae.core.device, "has_fast_bf16", lambda device: native)
    train, test = digits
    config = TrainConfig(model="fc", epochs=1, batch_size=64, precision="auto", threads=1)
    Trainer(config, tmp_path / "run", train_set=train, test_set=test, progress=False).fit()
    # config.json keeps what ran, so a resume on another machine trains the same way
    assert read_config(tmp_path / "run")["training"]["precision"] == ("bf16" if native else "fp32")


def test_precision_defaults_to_fp32() -> None:
    """The goldens were measured in fp32, and bf16 is slower than fp32 where it is emulated."""
    assert TrainConfig(model="fc").resolved(named_dataset=False).precision == "fp32"
    assert TrainConfig(task="denoise").resolved(named_dataset=False).precision == "fp32"
    assert TrainConfig(model="fc", precision="bf16").resolved(named_dataset=False).precision == "bf16"


def test_unknown_precision_is_a_one_line_error(tmp_path: Path, digits) -> None:
    with pytest.raises(ConvaeError, match="--precision must be one of fp32, bf16"):
        Trainer(TrainConfig(model="fc", precision="fp16"), tmp_path / "run", train_set=digits[0])


def test_default_threads_respects_omp_num_threads_and_splits_cores(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads(4) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    cores = default_threads()
    assert cores >= 1 and default_threads(cores * 2) == 1


def test_auto_device_is_cpu_without_cuda_and_cuda_is_refused() -> None:
    if torch.cuda.is_available():
        assert pick_device("auto").type == "cuda" and pick_device("cuda", 0) == torch.device("cuda", 0)
    else:
        assert pick_device("auto") == torch.device("cpu")
        with pytest.raises(ConvaeError, match="CUDA is not available"):
            pick_device("cuda")
