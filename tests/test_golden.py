"""Golden outputs: tiny seeded runs per preset and per application, pinned in tests/expected/.

As in CompressAI's tests/expected, these pin what convae computes today so a refactor
cannot change it unnoticed: the evaluate JSON of every preset, detect scores, the md5 of
encoded codes, denoised and colorized pixels, and a classifier's evaluation. Numbers are
compared with tolerances (training is repeatable on one machine, but fused and unfused
optimizer kernels may differ in the last bits): encoded codes by their decoded values, not by
the md5 of bytes that such a last bit may move. A golden that holds nothing fails.

Regenerate on purpose only. As CompressAI's GENERATE_EXPECTED, ``CONVAE_REGEN_GOLDEN=1`` writes
only the goldens that are missing; ``CONVAE_REGEN_GOLDEN=NAME[,NAME]`` rewrites those named
(e.g. ``CONVAE_REGEN_GOLDEN=colorize-pixels python -m pytest tests/test_golden.py``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import bar_image, write_bars
from PIL import Image

from convae.applications.codes.format import read_codes
from convae.applications.codes.quantize import dequantize

EXPECTED = Path(__file__).parent / "expected"
REGENERATE = os.environ.get("CONVAE_REGEN_GOLDEN", "")
PRESETS = ("fc", "conv-pool", "unpool", "unpool-2level", "strided", "conv")
METRIC_KEYS = ("mse", "rmse", "psnr", "ssim", "bce", "l1")
#: Absolute tolerance of an evaluation's metrics. SSIM is a mean of per-pixel terms of order 1
#: that nearly cancel after 2 epochs (0.0125 for conv), so the last-bit drift that moves the
#: terms by the relative tolerance moves it by more than 2e-5: 5e-5 on an AVX-512 machine,
#: with every other metric within 2e-3.
EVALUATE_ABS = 2e-4

pytestmark = pytest.mark.usefixtures("one_thread")


def check_golden(name: str, actual: dict[str, Any], *, rel: float = 2e-3, abs_: float = 2e-5) -> None:
    """Compare ``actual`` with tests/expected/NAME.json (numbers within tolerance, the rest exactly)."""
    path = EXPECTED / f"{name}.json"
    assert pins_something(actual), f"{name}: the values to pin are empty ({actual!r}); the test found nothing"
    if should_write(name, path):
        EXPECTED.mkdir(exist_ok=True)
        path.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    assert path.exists(), f"{path} is missing; write it with CONVAE_REGEN_GOLDEN=1 (only missing ones are written)"
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert pins_something(expected), f"{path}: a golden that pins nothing"
    _compare(expected, json.loads(json.dumps(actual)), name, rel, abs_)


def should_write(name: str, path: Path, setting: str | None = None) -> bool:
    """``1``: only a missing golden; ``NAME,...``: those named, even when present; unset: none."""
    setting = REGENERATE if setting is None else setting
    if not setting:
        return False
    if setting == "1":
        return not path.exists()
    return name in {part.strip() for part in setting.split(",")}


def pins_something(value: Any) -> bool:
    """A golden must hold at least one number or string at its leaves: ``{}``, ``[]``, ``{"a": {}}`` pin nothing."""
    if isinstance(value, dict):
        return any(pins_something(v) for v in value.values())
    if isinstance(value, list):
        return any(pins_something(v) for v in value)
    return value is not None


def _compare(expected: Any, actual: Any, where: str, rel: float, abs_: float) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and sorted(actual) == sorted(expected), f"{where}: keys differ"
        for key in expected:
            _compare(expected[key], actual[key], f"{where}.{key}", rel, abs_)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: lengths differ"
        for i, (e, a) in enumerate(zip(expected, actual)):
            _compare(e, a, f"{where}[{i}]", rel, abs_)
    elif isinstance(expected, float) or (isinstance(expected, int) and isinstance(actual, float)):
        assert actual == pytest.approx(expected, rel=rel, abs=abs_), f"{where}: {actual} != {expected}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16×16 gray bars: class 0 horizontal (normal), class 1 vertical."""
    return write_bars(tmp_path_factory.mktemp("golden-bars"), {"train": 48, "test": 12}, seed=7, low=180)


@pytest.fixture(scope="module")
def colour_bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("golden-colour")
    rng = np.random.default_rng(11)
    for split, count in (("train", 40), ("test", 8)):
        folder = root / split / "bars"
        folder.mkdir(parents=True)
        for i in range(count):
            gray = bar_image(rng, bool(i % 2), 16, low=120).astype(np.float32) / 255
            tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
            Image.fromarray((gray[..., None] * tint * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def _train(cli, out: Path, *args: str) -> None:
    code, _, err = cli("train", "--out", out, "--threads", "1", "--seed", "0", "--no-progress", *args)
    assert code == 0, err


def _evaluate(cli, run: Path) -> dict[str, Any]:
    code, out, err = cli("evaluate", run, "--json", "--device", "cpu")
    assert code == 0, err
    result = json.loads(out)
    return {key: result[key] for key in (*METRIC_KEYS, "per_class_mse", "images") if key in result}


def _pixels(folder: Path) -> dict[str, Any]:
    """Every PNG under ``folder`` (outputs keep the inputs' subfolders), by its path inside it."""
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)).astype(int).flatten().tolist()
            for p in sorted(folder.rglob("*.png"))}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_evaluates_as_before(cli, bars: Path, tmp_path: Path, preset: str) -> None:
    run = tmp_path / preset
    _train(cli, run, "--dataset", f"folder:{bars}", "--model", preset, "--epochs", "2", "--batch-size", "16")
    check_golden(f"evaluate-{preset}", _evaluate(cli, run), abs_=EVALUATE_ABS)


@pytest.fixture(scope="module")
def anomaly_run(bars: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from convae.cli import main

    run = tmp_path_factory.mktemp("golden-runs") / "anomaly"
    import sys

    argv = sys.argv
    sys.argv = ["convae", "train", "--out", str(run), "--threads", "1", "--seed", "0", "--no-progress",
                "--dataset", f"folder:{bars}", "--model", "conv", "--model-arg", "latent_dim=4",
                "--model-arg", "width=4", "--model-arg", "levels=1", "--epochs", "3", "--batch-size", "16",
                "--normal-classes", "0", "--val-fraction", "0.25"]
    try:
        main()
    except SystemExit as exit_:
        assert not exit_.code
    finally:
        sys.argv = argv
    return run


@pytest.mark.parametrize("score", ["ssim", "hybrid"])
def test_detect_scores_as_before(cli, anomaly_run: Path, bars: Path, tmp_path: Path, score: str) -> None:
    run = tmp_path / "run"
    import shutil

    shutil.copytree(anomaly_run, run)
    code, out, err = cli("detect", run, bars / "test", "--fit", "--score", score, "--json", "--device", "cpu")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    scores = {Path(r["path"]).parent.name + "/" + Path(r["path"]).name: [r["score"], r["verdict"]] for r in rows}
    threshold = json.loads((run / "threshold.json").read_text())
    check_golden(f"detect-{score}", {"scores": scores, "threshold": threshold["value"]}, rel=1e-3, abs_=1e-4)


@pytest.mark.parametrize("bits", [4, 8])
def test_encoded_bytes_as_before(cli, anomaly_run: Path, bars: Path, tmp_path: Path, bits: int) -> None:
    out = tmp_path / "codes.cvc"  # from files: the stored names are stable, a dataset's tmp path is not
    code, _, err = cli("encode", anomaly_run, bars / "test" / "vertical", "--out", out, "--bits", str(bits),
                       "--device", "cpu")
    assert code == 0, err
    codes = read_codes(out)
    values = dequantize(codes).double().numpy()
    # Decoded values, not bytes: one code that moves by a quantisation step in the last bit of an
    # optimizer kernel changes the md5 but stays within this tolerance.
    check_golden(f"encode-{bits}bit", {"names": list(codes.names or []), "shape": list(values.shape),
                                       "values": np.round(values, 6).flatten().tolist(),
                                       "bytes": out.stat().st_size}, rel=1e-3, abs_=2e-3)


def test_denoised_pixels_as_before(cli, bars: Path, tmp_path: Path) -> None:
    run = tmp_path / "denoise"
    _train(cli, run, "--dataset", f"folder:{bars}", "--model", "conv-pool", "--epochs", "2", "--batch-size", "16",
           "--task", "denoise", "--noise", "gaussian:0.3")
    code, _, err = cli("denoise", run, bars / "test" / "vertical", "--out", tmp_path / "out", "--device", "cpu")
    assert code == 0, err
    check_golden("denoise-pixels", _pixels(tmp_path / "out"), rel=0, abs_=1.01)
    check_golden("evaluate-denoise", _evaluate(cli, run), abs_=EVALUATE_ABS)


def test_colorized_pixels_as_before(cli, colour_bars: Path, tmp_path: Path) -> None:
    run = tmp_path / "colorize"
    _train(cli, run, "--dataset", f"folder:{colour_bars}", "--model", "conv-pool", "--epochs", "2",
           "--batch-size", "8", "--task", "colorize")
    code, _, err = cli("colorize", run, colour_bars / "test", "--out", tmp_path / "out", "--device", "cpu")
    assert code == 0, err
    check_golden("colorize-pixels", _pixels(tmp_path / "out"), rel=0, abs_=1.01)


@pytest.mark.parametrize("preset", ["cnn", "cnn-deep"])
def test_classifier_evaluates_as_before(cli, bars: Path, tmp_path: Path, preset: str) -> None:
    run = tmp_path / preset
    code, _, err = cli("classify", "train", "--dataset", f"folder:{bars}", "--model", preset, "--epochs", "2",
                       "--batch-size", "16", "--schedule", "none", "--augment", "none", "--threads", "1",
                       "--device", "cpu", "--out", run)
    assert code == 0, err
    code, out, err = cli("classify", "evaluate", run, "--json", "--device", "cpu")
    assert code == 0, err
    result = json.loads(out)
    check_golden(f"classify-{preset}", {k: result[k] for k in ("accuracy", "loss", "confusion_matrix", "images")})


def test_an_empty_golden_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself: an empty actual value, or an empty stored golden, fails instead of passing."""
    monkeypatch.setattr(sys.modules[__name__], "EXPECTED", tmp_path)
    with pytest.raises(AssertionError, match="empty"):
        check_golden("nothing", {})
    (tmp_path / "stored-empty.json").write_text("{}\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="pins nothing"):
        check_golden("stored-empty", {"a": 1.0})
    (tmp_path / "perturbed.json").write_text(json.dumps({"a": 1.0, "b": [1, 2]}), encoding="utf-8")
    check_golden("perturbed", {"a": 1.0, "b": [1, 2]})
    with pytest.raises(AssertionError):
        check_golden("perturbed", {"a": 1.01, "b": [1, 2]})
    with pytest.raises(AssertionError):
        check_golden("perturbed", {"a": 1.0, "b": [1, 3]})


def test_regenerating_writes_only_missing_goldens_unless_named(tmp_path: Path) -> None:
    present = tmp_path / "present.json"
    present.write_text("{}", encoding="utf-8")
    assert not should_write("present", present, "1")
    assert should_write("missing", tmp_path / "missing.json", "1")
    assert should_write("present", present, "present,other")
    assert not should_write("present", present, "other")
    assert not should_write("present", present, "")
