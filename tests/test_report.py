"""Seeing a run: logs while training, the report of every kind of run, runs side by side, a real browser."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import write_bars
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ("--threads", "1", "--no-progress", "--epochs", "2", "--batch-size", "16")
MAX_REPORT_BYTES = 2 * 2**20


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bars(tmp_path_factory.mktemp("report-bars"), {"train": 24, "test": 8}, seed=9)


@pytest.fixture(scope="module")
def colour(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np

    root = tmp_path_factory.mktemp("report-colour")
    rng = np.random.default_rng(2)
    for split, count in (("train", 24), ("test", 6)):
        (root / split / "x").mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / split / "x" / f"{i}.png")
    return root


def _sections(page: str) -> list[str]:
    return re.findall(r"<h2>([^<(]+)", page)


def _report(cli, run: Path) -> str:
    code, _, err = cli("report", run)
    assert code == 0, err
    page = (run / "report.html").read_text()
    assert len(page.encode()) < MAX_REPORT_BYTES
    assert "<div class='summary'>" in page and "trained 20" in page  # what, on what, when, for how long
    assert "<h2>Settings</h2>" in page and "<details><summary>config.json</summary>" in page
    return page


# -- logs while training -----------------------------------------------------------------------------------


def test_training_writes_tensorboard_events_and_a_csv(cli, bars: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "r"
    code, _, err = cli("train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--out", run, *FAST)
    assert code == 0, err
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    jsonl = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [int(r["epoch"]) for r in rows] == [r["epoch"] for r in jsonl] == [1, 2]
    assert float(rows[-1]["test_loss"]) == pytest.approx(jsonl[-1]["test_loss"])
    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0}).Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss_per_step", "train/lr", "epoch/train_loss", "epoch/test_loss"} <= set(scalars)
    # 48 images, batch 16: 3 steps an epoch; every 10th step and each epoch's last step are logged
    assert [e.step for e in events.Scalars("train/loss_per_step")] == [3, 6]
    assert [e.step for e in events.Scalars("epoch/test_loss")] == [1, 2]
    (grid,) = events.Tags()["images"]
    assert len(events.Images(grid)) == 2  # a picture of the reconstructions every epoch


def test_logger_none_writes_no_logs(cli, bars: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    code, _, err = cli("train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--out", run, "--logger",
                       "none", *FAST)
    assert code == 0, err
    assert not (run / "tb").exists() and not (run / "metrics.csv").exists() and (run / "metrics.jsonl").exists()


def test_classifier_runs_log_too(cli, bars: Path, tmp_path: Path) -> None:
    run = tmp_path / "c"
    code, _, err = cli("classify", "train", "--dataset", f"folder:{bars}", "--out", run, "--logger", "csv", *FAST)
    assert code == 0, err
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and "val_accuracy" in rows[0]
    assert not (run / "tb").exists()


# -- the report of every kind of run ---------------------------------------------------------------------


def test_autoencoder_report(cli, bars: Path, tmp_path: Path) -> None:
    run = tmp_path / "ae"
    assert cli("train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--out", run, *FAST)[0] == 0
    assert cli("show", run, "--latent")[0] == 0
    page = _report(cli, run)
    assert _sections(page)[:3] == ["Reconstruction ", "The code space", "Training"]
    assert " dB</td>" in page  # PSNR has its unit
    assert "<h3>Per class</h3>" in page and "<td>horizontal</td>" in page and "<td>vertical</td>" in page
    for name in ("reconstructions.png", "reconstructions-per-class.png", "loss.png", "latent_pca.png",
                 "interpolations.png"):
        assert f"data-name='{name}'" in page
    assert "<td></td>" not in page  # no empty cells


def test_anomaly_report_has_galleries(cli, bars: Path, tmp_path: Path) -> None:
    run = tmp_path / "an"
    assert cli("train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--normal-classes", "0",
               "--out", run, *FAST)[0] == 0
    code, _, err = cli("detect", run, "--eval")
    assert code == 0, err
    page = (run / "report.html").read_text()  # detect --eval refreshes the report
    assert "Anomaly detection " in _sections(page)
    for name in ("detect-gallery.png", "detect-roc.png", "detect-scores.png"):
        assert f"data-name='{name}'" in page
    with Image.open(run / "figures" / "detect-gallery.png") as gallery:
        assert gallery.size[0] > 400


@pytest.mark.parametrize(("task", "data", "title"), [("denoise", "bars", "Denoising"),
                                                     ("colorize", "colour", "Colorization")])
def test_restoration_report_shows_before_after_target(cli, request, tmp_path: Path, task: str, data: str,
                                                       title: str) -> None:
    run = tmp_path / task
    assert cli("train", "--dataset", f"folder:{request.getfixturevalue(data)}", "--model", "conv-pool", "--task", task,
               "--out", run, *FAST)[0] == 0
    page = _report(cli, run)
    assert title in _sections(page) and "data-name='restorations.png'" in page
    assert "<td>convae</td>" in page and "baseline: " in page


def test_codes_report_shows_the_rate_curve(cli, bars: Path, tmp_path: Path) -> None:
    run = tmp_path / "cd"
    assert cli("train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--out", run, *FAST)[0] == 0
    assert cli("evaluate", run, "--rate", "--rate-images", "8")[0] == 0
    page = _report(cli, run)
    assert "Rate–distortion " in _sections(page) and "data-name='rate_distortion.png'" in page


def test_classifier_report(cli, bars: Path, tmp_path: Path) -> None:
    run = tmp_path / "cl"
    assert cli("classify", "train", "--dataset", f"folder:{bars}", "--out", run, *FAST)[0] == 0
    page = _report(cli, run)
    assert "Classification " in _sections(page) and " %</td>" in page
    assert "data-name='confusion-test.png'" in page and "<td>vertical</td>" in page


# -- runs side by side -------------------------------------------------------------------------------------


def test_compare_prints_and_draws_runs_side_by_side(cli, bars: Path, tmp_path: Path) -> None:
    for name, model in (("a", "conv-pool"), ("b", "strided")):
        assert cli("train", "--dataset", f"folder:{bars}", "--model", model, "--out", tmp_path / name, *FAST)[0] == 0
    assert cli("evaluate", tmp_path / "a")[0] == 0
    code, out, err = cli("compare", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "compare.html")
    assert code == 0, err
    assert "| model | conv-pool | strided |" in out and "| test RMSE |" in out
    page = (tmp_path / "compare.html").read_text()
    assert page.count("<figure") == 2 and "Settings that differ" in page and len(page.encode()) < MAX_REPORT_BYTES
    code, _, err = cli("compare", tmp_path / "a")
    assert code == 2 and "at least two run directories" in err


# -- a real browser ----------------------------------------------------------------------------------------


def _render(page: Path, shot: Path) -> str:
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--enable-logging=stderr",
         "--v=0", f"--user-data-dir={shot.parent / 'profile'}", f"--screenshot={shot}", "--window-size=1000,2000",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    return done.stderr


@pytest.mark.skipif(not shutil.which("chromium"), reason="headless Chromium is not installed (apt-get install chromium)")
def test_report_and_compare_render_in_headless_chromium(cli, bars: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert cli("train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--normal-classes", "0",
                   "--out", tmp_path / name, *FAST)[0] == 0
    assert cli("detect", tmp_path / "a", "--eval")[0] == 0
    assert cli("compare", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "compare.html")[0] == 0
    for page in (tmp_path / "a" / "report.html", tmp_path / "compare.html"):
        shot = tmp_path / f"{page.parent.name}-{page.stem}.png"
        log = _render(page, shot)
        assert "Uncaught" not in log and "Failed to load" not in log and "ERR_FILE_NOT_FOUND" not in log, log
        with Image.open(shot) as image:
            assert image.size == (1000, 2000)
            # A page with its figures has many distinct colours; an error page or missing images have few.
            assert len(image.convert("RGB").getcolors(1 << 20) or []) > 50
