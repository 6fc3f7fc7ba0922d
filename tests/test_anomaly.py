"""Anomaly detection: scores, thresholds, metrics, and the `convae detect` command.

A tiny conv autoencoder is trained (once per module, a few seconds) on a folder dataset of
16×16 images with horizontal bars (class 0, normal); vertical bars (class 1) are the
anomalies. The folder layout goes through the same loader and run directory as a user's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import bar_image
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from torchmetrics.functional.classification import binary_auroc, binary_average_precision, binary_f1_score

from convae.applications import anomaly
from convae.core.errors import ConvaeError
from convae.data import load_dataset
from convae.metrics import batch_ssim
from convae.run import load_model
from convae.training import TrainConfig, Trainer

SIZE = 16


def bars(rng: np.random.Generator, vertical: bool, size: int = SIZE) -> np.ndarray:
    return bar_image(rng, vertical, size, low=180)


@pytest.fixture(scope="module")
def bars_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bars")
    rng = np.random.default_rng(0)
    for split, counts in (("train", {"horizontal": 120, "vertical": 60}), ("test", {"horizontal": 40, "vertical": 40})):
        for name, count in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(bars(rng, name == "vertical")).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def run_dir(bars_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conv autoencoder trained on the horizontal bars only (class 0), 25% held out for validation."""
    import os

    os.environ.setdefault("CONVAE_CACHE", str(tmp_path_factory.getbasetemp() / "convae-cache"))
    run = tmp_path_factory.mktemp("runs") / "bars"
    config = TrainConfig(dataset=f"folder:{bars_folder}", model="conv",
                         model_args={"latent_dim": 4, "width": 4, "levels": 1}, epochs=30, batch_size=16, lr=5e-3,
                         normal_classes=[0], val_fraction=0.25, seed=0, threads=1)
    Trainer(config, run, progress=False).fit()
    return run


@pytest.fixture
def fresh_run(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the trained run without a stored threshold (tests may write into it)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("threshold.json", "figures", "*.html", "detect-*"))
    return copy


# -- scores -----------------------------------------------------------------------------
class Halve(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5


def test_scores_follow_their_definitions() -> None:
    x = torch.rand(6, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    model = Halve()
    for kind, expected in (
        ("mse", (0.5 * x - x).pow(2).flatten(1).mean(1)),
        ("l1", (0.5 * x - x).abs().flatten(1).mean(1)),
        ("ssim", 1 - batch_ssim(0.5 * x, x)),
    ):
        scores, maps, output = anomaly.error_maps(model, x, kind)
        assert maps.shape == (6, 20, 20)
        assert torch.allclose(scores, expected, atol=1e-5), kind
        assert torch.allclose(maps.flatten(1).mean(1), scores)
    images = (x * 255).round().to(torch.uint8)
    by_kind = anomaly.score_kinds(model, images, batch_size=4)
    assert set(by_kind) == set(anomaly.PIXEL_KINDS)
    single = anomaly.score_images(model, images, "mse", batch_size=5)
    assert np.allclose(by_kind["mse"], single)
    with pytest.raises(ConvaeError, match="--score must be one of"):
        anomaly.score_images(model, images, "psnr")


def test_autoencoder_trained_on_one_class_scores_a_different_image_higher(run_dir: Path, bars_folder: Path) -> None:
    model, _ = load_model(run_dir)
    test = load_dataset(f"folder:{bars_folder}", "test")
    assert test.classes == ["horizontal", "vertical"]
    anomalous = (test.labels == 1).numpy()
    for kind, scores in anomaly.score_kinds(model, test.images).items():
        assert scores[anomalous].mean() > 1.5 * scores[~anomalous].mean(), kind
        assert roc_auc_score(anomalous, scores) > 0.95, kind


# -- metrics against scikit-learn and torchmetrics --------------------------------------
def test_detection_metrics_on_known_inputs() -> None:
    # The textbook case: AUROC 0.75, AP 0.8333...
    known = anomaly.detection_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], threshold=0.3)
    assert known["auroc"] == pytest.approx(0.75)
    assert known["average_precision"] == pytest.approx(5 / 6)
    assert (known["precision"], known["recall"], known["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (known["true_positives"], known["false_positives"], known["false_negatives"]) == (2, 1, 0)

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    scores = np.clip(rng.normal(0.4 + 0.2 * labels, 0.15), 0.0, 1.0)  # in [0, 1]: torchmetrics takes them as is
    result = anomaly.detection_metrics(scores, labels, threshold=0.5)
    s, y = torch.tensor(scores), torch.tensor(labels)
    assert result["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert result["auroc"] == pytest.approx(float(binary_auroc(s, y)), abs=1e-6)
    assert result["average_precision"] == pytest.approx(average_precision_score(labels, scores))
    assert result["average_precision"] == pytest.approx(float(binary_average_precision(s, y)), abs=1e-6)
    assert result["f1"] == pytest.approx(f1_score(labels, scores > 0.5))
    assert result["f1"] == pytest.approx(float(binary_f1_score(s, y, threshold=0.5)), abs=1e-6)
    with pytest.raises(ConvaeError, match="both normal and anomalous"):
        anomaly.detection_metrics([0.1, 0.2], [0, 0])


# -- thresholds -------------------------------------------------------------------------
def test_threshold_on_normal_only_validation_never_flags_everything() -> None:
    normal = np.random.default_rng(0).lognormal(-3, 0.5, 2000)
    q = anomaly.fit_threshold(normal, quantile=0.99, score="mse")
    assert q.method == "quantile" and q.validation_images == 2000 and q.validation_anomalies == 0
    assert q.value == pytest.approx(np.quantile(normal, 0.99))
    assert 0.005 <= anomaly.verdicts(normal, q.value).mean() <= 0.011
    m = anomaly.fit_threshold(normal, method="meanstd", k=3.0)
    assert m.value == pytest.approx(normal.mean() + 3 * normal.std(ddof=1))
    assert anomaly.verdicts(normal, m.value).mean() < 0.05
    # Degenerate validation sets: every score equal, or a single image. Nothing is flagged.
    for scores in (np.full(50, 0.02), np.array([0.3])):
        for method in ("quantile", "meanstd"):
            fitted = anomaly.fit_threshold(scores, method=method)
            assert not anomaly.verdicts(scores, fitted.value).any()
            assert fitted.validation_flagged == 0.0
    with pytest.raises(ConvaeError, match="needs labelled anomalies"):
        anomaly.fit_threshold(normal, method="f1")
    with pytest.raises(ConvaeError, match="--quantile"):
        anomaly.fit_threshold(normal, quantile=1.5)
    with pytest.raises(ConvaeError, match="NaN"):
        anomaly.fit_threshold([0.1, float("nan")])


def test_f1_threshold_is_the_best_and_reproduces_its_f1() -> None:
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(300, int), np.ones(60, int)]
    scores = np.r_[rng.normal(0.0, 1.0, 300), rng.normal(2.0, 1.0, 60)]
    fitted = anomaly.fit_threshold(scores, labels=labels, method="f1")
    achieved = f1_score(labels, anomaly.verdicts(scores, fitted.value))
    assert fitted.f1 == pytest.approx(achieved)
    brute = max(f1_score(labels, scores > t) for t in np.r_[scores, scores.min() - 1])
    assert achieved == pytest.approx(brute)
    assert fitted.validation_anomalies == 60


def test_run_threshold_is_fitted_on_normal_validation_and_stored(fresh_run: Path) -> None:
    fitted = anomaly.fit_run_threshold(fresh_run, quantile=0.95)
    stored = json.loads((fresh_run / anomaly.THRESHOLD_FILE).read_text())
    assert stored["method"] == "quantile" and stored["quantile"] == 0.95 and stored["score"] == "ssim"
    assert stored["validation_images"] == 30 and stored["validation_anomalies"] == 0  # 25% of 120
    assert "held out" in stored["fitted_on"] and "horizontal" in stored["fitted_on"]
    assert stored["value"] == pytest.approx(fitted.value)
    data, labels, _ = anomaly.validation_data(fresh_run)
    model, _ = load_model(fresh_run)
    flagged = anomaly.verdicts(anomaly.score_images(model, data.images, "ssim"), fitted.value)
    assert flagged.mean() <= 0.1 and flagged.mean() == pytest.approx(fitted.validation_flagged)
    f1 = anomaly.fit_run_threshold(fresh_run, method="f1", score="mse", save=False)
    assert f1.validation_anomalies == 15 and f1.f1 > 0.9  # 25% of the 60 vertical training images
    assert json.loads((fresh_run / anomaly.THRESHOLD_FILE).read_text())["score"] == "ssim"  # save=False


def test_run_without_validation_split_says_how_to_get_one(bars_folder: Path, tmp_path: Path) -> None:
    config = TrainConfig(dataset=f"folder:{bars_folder}", model="conv",
                         model_args={"latent_dim": 2, "width": 2, "levels": 1}, epochs=1, batch_size=64, threads=1)
    Trainer(config, tmp_path / "all", progress=False).fit()
    with pytest.raises(ConvaeError, match="no validation split.*--normal-classes"):
        anomaly.fit_run_threshold(tmp_path / "all")


# -- the CLI ----------------------------------------------------------------------------
@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    rng = np.random.default_rng(7)
    Image.fromarray(bars(rng, False)).save(folder / "normal-a.png")
    Image.fromarray(bars(rng, False)).save(folder / "normal-b.png")
    Image.fromarray(bars(rng, True)).save(folder / "odd.png")
    wide = bars(rng, False, size=24)[:, :20]
    Image.fromarray(np.stack([wide, wide, wide], axis=2)).save(folder / "rgb.png")  # 20 wide × 24 high, RGB
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (folder / "notes.txt").write_text("not an image extension: ignored in folders")
    return folder


def test_detect_scores_files_writes_csv_and_heatmaps(cli, fresh_run: Path, inputs: Path, tmp_path: Path) -> None:
    code, out, err = cli("detect", fresh_run, inputs, "--csv", tmp_path / "scores.csv", "--heatmaps", tmp_path / "heat")
    assert code == 2  # a file could not be read: reported, the others still scored
    assert "broken.png: not a readable image" in err
    assert err.strip().splitlines()[-1].startswith("error: 1 of 5 file(s) could not be read")
    assert "fitted threshold" in err and (fresh_run / "threshold.json").exists()
    lines = {Path(line.split()[0]).name: line for line in out.strip().splitlines()}
    assert set(lines) == {"normal-a.png", "normal-b.png", "odd.png", "rgb.png"}
    assert "RGB converted to gray; resized 24×20 → 16×16" in lines["rgb.png"]  # H×W: 24 high, 20 wide

    rows = {Path(r["path"]).name: r for r in csv.DictReader((tmp_path / "scores.csv").open())}
    assert list(rows["odd.png"]) == list(anomaly.CSV_COLUMNS)
    assert rows["odd.png"]["verdict"] == "anomalous"
    assert rows["normal-a.png"]["verdict"] == rows["normal-b.png"]["verdict"] == "normal"
    assert rows["rgb.png"]["verdict"] == "normal" and "converted" in rows["rgb.png"]["note"]
    assert rows["broken.png"]["verdict"] == "unreadable" and rows["broken.png"]["score"] == ""
    assert float(rows["odd.png"]["score"]) > float(rows["odd.png"]["threshold"]) > float(rows["normal-a.png"]["score"])
    assert {r["score_kind"] for r in rows.values()} == {"ssim"}

    heat = sorted((tmp_path / "heat").glob("*.png"))
    assert [p.name for p in heat if "_overlay" not in p.name] == ["normal-a.png", "normal-b.png", "odd.png", "rgb.png"]
    # rgb.png was resized for the model: its map is drawn back on the original, with the predicted mask
    assert sorted(p.name for p in heat if "_overlay" in p.name) == ["rgb_overlay.png", "rgb_overlay_mask.png"]
    with Image.open(heat[0]) as picture:
        assert picture.mode == "RGB" and picture.width > 3 * SIZE and picture.height > SIZE
    assert rows["odd.png"]["heatmap"].endswith("odd.png")


def test_detect_json_and_given_threshold(cli, fresh_run: Path, inputs: Path) -> None:
    code, out, _ = cli("detect", fresh_run, inputs / "odd.png", inputs / "normal-a.png", "--threshold", "0", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["verdict"] for r in rows] == ["anomalous", "anomalous"]  # every score > 0
    assert not (fresh_run / "threshold.json").exists()  # a given threshold is not stored


def test_detect_fit_and_eval(cli, fresh_run: Path) -> None:
    code, out, err = cli("detect", fresh_run, "--fit", "--threshold-method", "meanstd", "--k", "2", "--score", "mse")
    assert code == 0, err
    assert "mean + 2.0·std of 30 normal validation scores" in out
    stored = json.loads((fresh_run / "threshold.json").read_text())
    assert (stored["method"], stored["k"], stored["score"]) == ("meanstd", 2.0, "mse")

    code, out, err = cli("detect", fresh_run, "--eval")
    assert code == 0, err
    assert "40 normal (horizontal), 40 anomalous" in out and "AUROC" in out
    result = json.loads((fresh_run / "detect-eval.json").read_text())
    assert result["score"] == "mse" and result["auroc"] > 0.95
    assert result["threshold"] == pytest.approx(stored["value"])
    assert result["auroc_per_anomalous_class"].keys() == {"vertical"}
    for name in ("detect-roc.png", "detect-scores.png"):
        assert (fresh_run / "figures" / name).stat().st_size > 1000
    page = (fresh_run / "report.html").read_text()
    assert "Anomaly detection" in page and "detect-roc" in page

    code, _, err = cli("detect", fresh_run, "--eval", "--score", "l1")
    assert code == 2 and "holds a threshold for mse scores, not l1" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["detect", "{missing}", "x.png"], "no such run directory"),
        (["detect", "{run}"], "detect needs images or folders to score, --eval, or --fit"),
        (["detect", "{run}", "--fit", "--score", "psnr"], "--score must be one of"),
        (["detect", "{run}", "--fit", "--threshold-method", "otsu"], "--threshold-method must be one of"),
        (["detect", "{run}", "--fit", "--quantile", "0"], "--quantile must be in (0, 1]"),
        (["detect", "{run}", "{run}/nothing.png"], "none of the 1 file(s) could be read"),
    ],
)
def test_detect_errors_are_one_line(cli, fresh_run: Path, tmp_path: Path, args: list[str], message: str) -> None:
    filled = [a.format(run=fresh_run, missing=tmp_path / "no-such-run") for a in args]
    code, _, err = cli(*filled)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err


def test_unreadable_file_by_itself_is_named(cli, fresh_run: Path, inputs: Path) -> None:
    code, out, err = cli("detect", fresh_run, inputs / "broken.png", "--threshold", "0.5")
    assert code == 2 and out == ""
    assert "broken.png: not a readable image" in err


# -- the hybrid score: 1 - SSIM plus the code's distance to the normal codes ------------------
def test_code_index_distances_and_standardisation_follow_their_definitions() -> None:
    from convae.applications.anomaly.index import build_code_index

    class Flat(torch.nn.Module):  # code = the pixels themselves, reconstruction = the input
        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    rng = np.random.default_rng(3)
    normal = torch.from_numpy(rng.integers(0, 256, (40, 1, 4, 4), dtype=np.uint8))
    val = torch.from_numpy(rng.integers(0, 256, (12, 1, 4, 4), dtype=np.uint8))
    val_ssim = rng.random(12)
    index = build_code_index(Flat(), normal, val, val_ssim, neighbours=3, weight=2.0)
    codes = normal.flatten(1).double().numpy() / 255
    scaled = (codes - codes.mean(0)) / codes.std(0)
    query = val.flatten(1).double().numpy() / 255
    gaps = np.linalg.norm(((query - codes.mean(0)) / codes.std(0))[:, None] - scaled[None], axis=2)
    expected = np.sort(gaps, axis=1)[:, :3].mean(1)  # brute force: mean of the 3 nearest
    assert np.allclose(index.distances(torch.from_numpy(query).float()), expected, atol=1e-4)
    hybrid = index.combine(val_ssim, index.distances(torch.from_numpy(query).float()))
    assert hybrid.mean() == pytest.approx(0.0, abs=1e-6)  # both parts standardised on these very images
    z = lambda v: (v - v.mean()) / v.std(ddof=1)  # noqa: E731
    assert np.allclose(hybrid, z(val_ssim) + 2.0 * z(expected), atol=1e-4)


def test_hybrid_score_ranks_anomalies_and_caches_its_index(run_dir: Path, bars_folder: Path, fresh_run: Path) -> None:
    from convae.applications.anomaly.index import INDEX_FILE, CodeIndex

    model, _ = load_model(fresh_run)
    index = anomaly.run_code_index(fresh_run, model)
    assert (fresh_run / INDEX_FILE).exists() and len(index.codes) == 90  # 120 horizontal bars minus 25% held out
    stamp = (fresh_run / INDEX_FILE).stat().st_mtime_ns
    test = load_dataset(f"folder:{bars_folder}", "test")
    anomalous = (test.labels == 1).numpy()
    scores = anomaly.score_kinds(model, test.images, ("hybrid", "ssim"), index=index)
    assert roc_auc_score(anomalous, scores["hybrid"]) > 0.95
    again = anomaly.run_code_index(fresh_run, model)  # cached: the file is not rewritten
    assert (fresh_run / INDEX_FILE).stat().st_mtime_ns == stamp
    assert np.array_equal(anomaly.score_kinds(model, test.images, ("hybrid",), index=again)["hybrid"], scores["hybrid"])
    with torch.no_grad():  # other weights (a resumed or retrained run): the stale index is rebuilt
        next(model.parameters()).mul_(1.01)
    rebuilt = anomaly.run_code_index(fresh_run, model)
    assert rebuilt.weights_sha256 != index.weights_sha256
    (fresh_run / INDEX_FILE).write_bytes(b"PK\x03\x04 truncated")  # a broken cache is rebuilt, not fatal
    assert anomaly.run_code_index(fresh_run, model).weights_sha256 == rebuilt.weights_sha256
    assert CodeIndex.read(fresh_run / INDEX_FILE).weights_sha256 == rebuilt.weights_sha256
    with pytest.raises(ConvaeError, match="needs the run's code index"):
        anomaly.score_kinds(model, test.images, ("hybrid",))


def test_detect_with_hybrid_score_fits_evaluates_and_draws(cli, fresh_run: Path, inputs: Path, tmp_path: Path) -> None:
    code, out, err = cli("detect", fresh_run, "--fit", "--score", "hybrid", "--threshold-method", "f1")
    assert code == 0, err
    assert "F1-optimal on 45 validation images (15 anomalous), F1 " in " ".join(out.split())  # 30 + 25% of 60
    assert "indexed the codes of 90 normal training images" in " ".join(err.split())
    code, out, err = cli("detect", fresh_run, "--fit", "--score", "hybrid")
    assert code == 0, err
    assert (fresh_run / "code-index.npz").exists() and json.loads((fresh_run / "threshold.json").read_text())["score"] == "hybrid"
    code, out, err = cli("detect", fresh_run, "--eval")
    assert code == 0, err
    assert json.loads((fresh_run / "detect-eval.json").read_text())["auroc"] > 0.95
    code, out, err = cli("detect", fresh_run, inputs, "--csv", tmp_path / "s.csv", "--heatmaps", tmp_path / "h")
    assert code == 2 and "broken.png" in err  # the unreadable file is named, the others scored
    rows = {Path(r["path"]).name: r for r in csv.DictReader((tmp_path / "s.csv").open())}
    assert {r["score_kind"] for r in rows.values()} == {"hybrid"}
    assert float(rows["odd.png"]["score"]) > max(float(rows[f"normal-{n}.png"]["score"]) for n in "ab")
    assert list((tmp_path / "h").glob("*.png"))


def test_hybrid_score_needs_a_tensor_code(tmp_path: Path) -> None:
    from convae.applications.anomaly.index import flat_codes
    from convae.models.registry import build_model

    model = build_model("unpool", (1, 28, 28))
    with pytest.raises(ConvaeError, match="needs a code that is one tensor"):
        flat_codes(model, torch.rand(2, 1, 28, 28))


def test_hybrid_detect_on_a_folder_of_several_batches(cli, fresh_run: Path, tmp_path: Path) -> None:
    """600 files are three batches of 256: every file gets its score, as one batch at a time would give it.

    (A folder of more than one batch used to end in AttributeError: the loop rebound the code index.)
    """
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(11)
    for i in range(600):
        Image.fromarray(bars(rng, vertical=i % 5 == 0)).save(folder / f"{i:03d}.png")
    code, out, err = cli("detect", fresh_run, folder, "--fit", "--score", "hybrid", "--json", "--heatmaps",
                         tmp_path / "heat")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(rows) == 600 and all(np.isfinite(r["score"]) for r in rows)
    assert len(list((tmp_path / "heat").glob("*.png"))) == 600
    small = anomaly.detect_paths(fresh_run, [folder], score="hybrid", batch_size=7, device="cpu")
    assert [r.path for r in small.results] == [r["path"] for r in rows]
    # Scores are float32 sums of standardized terms of order 1, so a batch of 7 against one of 256
    # moves them by a few 1e-6 whatever their size (3.3e-6 at most on one machine): atol, not rtol.
    assert np.allclose([r.score for r in small.results], [r["score"] for r in rows], rtol=1e-5, atol=2e-5)
    vertical = [r["score"] for i, r in enumerate(rows) if i % 5 == 0]
    horizontal = [r["score"] for i, r in enumerate(rows) if i % 5]
    assert np.median(vertical) > np.median(horizontal)  # the anomalies still rank higher
