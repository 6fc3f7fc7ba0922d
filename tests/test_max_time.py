"""--max-time: a run stops cleanly at the first step after its limit, finishes like a finished run,
and the same command with --resume continues it bit-identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_bars
from safetensors.torch import load_file

pytestmark = pytest.mark.usefixtures("one_thread")
ARGS = ("--model", "conv-pool", "--threads", "1", "--no-progress", "--epochs", "2", "--batch-size", "8",
        "--deterministic", "--device", "cpu")


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bars(tmp_path_factory.mktemp("time-bars"), {"train": 16, "test": 4}, seed=9)


def _train(cli, bars: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return cli("train", "--dataset", f"folder:{bars}", *ARGS, "--out", str(out), *extra)


def test_max_time_stops_checkpoints_and_resumes_bit_identical(cli, bars: Path, tmp_path: Path) -> None:
    code, _, err = _train(cli, bars, tmp_path / "whole")
    assert code == 0, err
    code, out, err = _train(cli, bars, tmp_path / "cut", "--max-time", "0.001s")
    assert code == 0, err
    assert "stopped on time: " in out and "in epoch 1 at step 1 of 4" in out, out
    record = json.loads((tmp_path / "cut" / "time-limit.json").read_text())
    assert record["step"] == 1 and record["epochs_done"] == 0 and record["evaluation"]["test_loss"] > 0
    log = tmp_path / "cut" / "metrics.jsonl"
    assert not log.exists() or not log.read_text().strip()  # the partial epoch is no row
    # The same command with a limit that is spent already stops again, training nothing more.
    code, out, err = _train(cli, bars, tmp_path / "cut", "--max-time", "0.001s", "--resume")
    assert code == 0 and "at step 1 of 4" in out, out
    code, out, err = _train(cli, bars, tmp_path / "cut", "--resume")  # no limit: to the end
    assert code == 0 and "done:" in out, err
    assert not (tmp_path / "cut" / "time-limit.json").exists()
    whole, cut = (load_file(tmp_path / name / "model.safetensors") for name in ("whole", "cut"))
    assert whole.keys() == cut.keys() and all(bool((whole[k] == cut[k]).all()) for k in whole)
    rows = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_a_classifier_stopped_on_time_is_evaluated_like_a_finished_one(cli, bars: Path, tmp_path: Path) -> None:
    code, out, err = cli("classify", "train", "--dataset", f"folder:{bars}", "--threads", "1", "--no-progress",
                         "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--max-time", "0.001s",
                         "--out", str(tmp_path / "c"))
    assert code == 0 and "stopped on time" in err and "test accuracy" in out, (out, err)
    assert (tmp_path / "c" / "eval-test.json").exists()


@pytest.mark.parametrize("value", ["0", "soon", "-5m", "10x"])
def test_a_bad_max_time_is_one_line_and_leaves_nothing(cli, bars: Path, tmp_path: Path, value: str) -> None:
    code, _, err = _train(cli, bars, tmp_path / "r", "--max-time", value)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "--max-time must be a time longer than zero" in lines[0], err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), (45, 45)])
def test_durations_read_as_a_user_writes_them(text: object, seconds: float) -> None:
    from convae.run.fields import Field

    assert Field("duration").check(text, "--max-time") == seconds
