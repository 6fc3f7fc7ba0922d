"""`convae bench speed`: the side-by-side speed suite runs and writes its result files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import real_data_root


def test_bench_speed_smoke_writes_json_and_markdown(tmp_path: Path, cli) -> None:
    root = real_data_root()
    if root is None:
        pytest.skip("needs real MNIST ($CONVAE_DATA or ../shared/data)")
    code, out, err = cli("bench", "speed", "--jobs", "fc", "--epochs", "2", "--limit", "300", "--threads", "1",
                         "--data-dir", str(root), "--out", str(tmp_path))
    assert code == 0, err
    result = json.loads((tmp_path / "speed.json").read_text())
    (row,) = result["jobs"]
    assert row["job"] == "fc" and row["train_images"] == 300 and row["epochs"] == 2 and row["batch_size"] == 124
    assert result["commit"] != "unknown" and row["speedup_vs_expert"] > 0
    for side in ("reference", "expert", "convae"):
        assert len(row[side]["epoch_seconds"]) == 2 and row[side]["images_per_s"] > 0
        assert 0 < row[side]["final_train_loss"] < 1 and 0 < row[side]["test_rmse"] < 1
    # Same model, same initial weights, same math: the two loops end at nearly the same loss.
    assert row["train_loss_relative_difference"] < 0.05
    assert abs(row["expert"]["final_train_loss"] - row["convae"]["final_train_loss"]) < 0.05 * row["convae"]["final_train_loss"]
    # Forward 2 matmuls, backward 3 (the first layer needs no gradient for its input).
    assert row["train_gflop_per_epoch"] == pytest.approx(300 * 784 * 200 * 2 * 5 / 1e9, rel=0.01)
    assert "| fc |" in (tmp_path / "speed.md").read_text()


def test_bench_speed_unknown_job_is_a_one_line_error(tmp_path: Path, cli) -> None:
    code, _, err = cli("bench", "speed", "--jobs", "resnet", "--out", str(tmp_path))
    assert code == 2 and "unknown job(s) resnet" in err
