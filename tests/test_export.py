"""ONNX export: every preset and kind matches torch, the metadata travels, and the runtime needs no torch.

Tiny runs of every autoencoder preset (and both classifiers, and a chroma colorizer) are
trained on 16×16 bar images: horizontal bars are normal, vertical ones the anomalies. Each
is exported as every kind it has; onnxruntime then runs seeded images the export never
saw, and each output must agree with what convae's own torch path gives (not just with the
traced module): ``detect`` against ``score_images``, the verb's scoring function.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import bar_image, write_bars
from PIL import Image

from convae import runtime
from convae.applications import anomaly
from convae.applications.export import TOLERANCE, export_run, seeded_images
from convae.core.errors import ConvaeError
from convae.metrics import ssim_map
from convae.models import SwitchedCode, code_values
from convae.models.blocks import scatter_unpool
from convae.run import Run
from convae.training import TrainConfig, Trainer

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

PRESETS = ["fc", "conv", "conv-pool", "strided", "unpool", "unpool-2level"]
SCORE_OF = {"conv": "hybrid", "strided": "mse", "fc": "l1"}  # the rest: ssim


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bars(tmp_path_factory.mktemp("export-bars"), {"train": 48, "test": 12}, seed=3)


@pytest.fixture(scope="module")
def runs(bars: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One trained run per preset, each with a fitted threshold (hybrid, mse, l1 or ssim)."""
    root = tmp_path_factory.mktemp("export-runs")
    made = {}
    for preset in PRESETS:
        config = TrainConfig(dataset=f"folder:{bars}", model=preset, epochs=4, batch_size=8, lr=3e-3,
                             normal_classes=[0], val_fraction=0.25, seed=0, threads=1, device="cpu")
        Trainer(config, root / preset, progress=False).fit()
        anomaly.fit_run_threshold(root / preset, score=SCORE_OF.get(preset, "ssim"), device="cpu")
        made[preset] = root / preset
    return made


def _images(shape: tuple[int, int, int], seed: int = 1, count: int = 5) -> torch.Tensor:
    """Seeded images the export's own check never saw, on the uint8 grid the verbs read."""
    return (seeded_images(shape, count, seed) * 255).round() / 255


def _close(got: np.ndarray, want: torch.Tensor | np.ndarray, what: str) -> None:
    want = want.detach().cpu().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape, what
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    assert diff.max(initial=0) <= TOLERANCE + 1e-5 * np.abs(want).max(initial=0), f"{what}: max |diff| {diff.max()}"


# -- the pieces an ONNX graph needs, against the torch originals ----------------------------
def test_ssim_map_is_torchmetrics_map_exactly() -> None:
    from torchmetrics.functional.image import structural_similarity_index_measure

    g = torch.Generator().manual_seed(0)
    for shape in [(3, 1, 28, 28), (2, 3, 32, 32), (2, 3, 13, 17)]:
        a, b = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
        _, full = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none", return_full_image=True)
        assert torch.equal(ssim_map(a, b), full)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_maps_depthwise_sums_are_the_exported_graphs_to_the_bit(channels: int, monkeypatch) -> None:
    """Training sums SSIM's windows in one depthwise convolution; a traced graph keeps the grouped one."""
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(4, channels, 24, 20, generator=g), torch.rand(4, channels, 24, 20, generator=g)
    results = []
    for tracing in (False, True):
        monkeypatch.setattr(torch.jit, "is_tracing", lambda tracing=tracing: tracing)
        x = a.clone().requires_grad_(True)
        value = ssim_map(x, b)
        value.sum().backward()
        results.append((value.detach(), x.grad))
    (eager, eager_grad), (traced, traced_grad) = results
    assert torch.equal(eager, traced)
    torch.testing.assert_close(eager_grad, traced_grad, rtol=1e-5, atol=1e-7)


def test_scatter_unpool_is_max_unpool_exactly() -> None:
    pool, unpool = torch.nn.MaxPool2d(2, return_indices=True), torch.nn.MaxUnpool2d(2)
    x = torch.rand(3, 4, 14, 15, generator=torch.Generator().manual_seed(1))
    values, indices = pool(x)
    assert torch.equal(scatter_unpool(values, indices, x.shape[-2:]), unpool(values, indices, output_size=x.shape[-2:]))


# -- parity: every preset, every kind ---------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_every_kind_of_every_preset_matches_torch(runs: dict[str, Path], preset: str, tmp_path: Path) -> None:
    run = Run.open(runs[preset])
    model = run.model()
    x = _images(run.config.input_shape)
    with torch.no_grad():
        code = model.encode(x)
        want_reconstruction = model(x)
    values = code_values(code)
    switches = [indices for indices, _ in code.switches] if isinstance(code, SwitchedCode) else []

    recon = runtime.Exported.load(export_run(run, tmp_path / "r.onnx", "reconstruct").path)
    _close(recon.run(x.numpy())["reconstruction"], want_reconstruction, "reconstruction")

    encoded = runtime.Exported.load(export_run(run, tmp_path / "e.onnx", "encode").path).run(x.numpy())
    _close(encoded["code"], values, "code")
    names = [n for n in encoded if n.startswith("switches")]
    assert len(names) == len(switches)
    for name, indices in zip(sorted(names), switches):
        assert np.array_equal(encoded[name], indices.numpy()), f"{name} differ"

    decoder = runtime.Exported.load(export_run(run, tmp_path / "d.onnx", "decode").path)
    feeds = {"code": values.numpy(), **{n: i.numpy() for n, i in zip(sorted(names), switches)}}
    _close(decoder.run(feeds)["reconstruction"], want_reconstruction, "decoded code")

    threshold = anomaly.load_threshold(run.path)
    index = anomaly.run_code_index(run, model) if threshold.score == anomaly.HYBRID else None
    detector = runtime.Exported.load(export_run(run, tmp_path / "a.onnx", "detect").path)
    found = detector.run(x.numpy())
    uint8 = (x * 255).round().to(torch.uint8)
    scores, maps = anomaly.score_images(model, uint8, threshold.score, with_maps=True, index=index)
    _close(found["score"], scores, f"{threshold.score} score")
    _close(found["anomaly_map"], maps, "anomaly map")
    _close(found["reconstruction"], want_reconstruction, "detect reconstruction")
    assert np.array_equal(found["anomalous"], anomaly.verdicts(scores, threshold.value))
    assert detector.threshold == threshold.value and detector.score_kind == threshold.score


def test_verdicts_on_both_sides_of_the_threshold_agree(runs: dict[str, Path], tmp_path: Path) -> None:
    """A threshold set at the median score: half the images on each side, identical verdicts."""
    run = Run.open(runs["conv-pool"])
    model = run.model()
    x = _images(run.config.input_shape, seed=7, count=40)
    uint8 = (x * 255).round().to(torch.uint8)
    scores = anomaly.score_images(model, uint8, "ssim")
    stored = anomaly.load_threshold(run.path)
    stored.value = float(np.median(scores))
    run.write_json(anomaly.THRESHOLD_FILE, stored.to_dict())
    got = runtime.Exported.load(export_run(run, tmp_path / "a.onnx", "detect").path).run(x.numpy())
    want = anomaly.verdicts(scores, stored.value)
    assert 0 < want.sum() < len(want)
    assert np.array_equal(got["anomalous"], want)


def test_classifiers_and_the_chroma_colorizer_match_torch(cli, bars: Path, tmp_path: Path) -> None:
    x = _images((1, 16, 16))
    for preset in ("cnn", "cnn-deep"):
        run_dir = tmp_path / preset
        code, _, err = cli("classify", "train", "--dataset", f"folder:{bars}", "--model", preset, "--epochs", "1",
                           "--batch-size", "16", "--threads", "1", "--device", "cpu", "--out", run_dir)
        assert code == 0, err
        run = Run.open(run_dir)
        exported = runtime.Exported.load(export_run(run, tmp_path / f"{preset}.onnx").path)
        assert exported.what == "classify" and exported.classes == ["horizontal", "vertical"]
        with torch.no_grad():
            _close(exported.run(x.numpy())["logits"], run.model()(x), f"{preset} logits")
    colour = tmp_path / "colour"
    rng = np.random.default_rng(2)
    for split, count in (("train", 24), ("test", 4)):
        (colour / split / "bars").mkdir(parents=True)
        for i in range(count):
            gray = bar_image(rng, bool(i % 2), 16, low=120).astype(np.float32) / 255
            tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
            Image.fromarray((gray[..., None] * tint * 255).astype(np.uint8)).save(colour / split / "bars" / f"{i}.png")
    config = TrainConfig(dataset=f"folder:{colour}", model="conv-pool", task="colorize", epochs=1, batch_size=8,
                         seed=0, threads=1, device="cpu")
    Trainer(config, tmp_path / "colorize", progress=False).fit()
    run = Run.open(tmp_path / "colorize")
    assert run.config["model"]["color_output"].startswith("chroma")
    exported = runtime.Exported.load(export_run(run, tmp_path / "c.onnx").path)
    with torch.no_grad():
        _close(exported.run(x.numpy())["reconstruction"], run.model()(x), "colorized")


# -- the file carries what it is ----------------------------------------------------------------
def test_metadata_names_version_digest_preset_shape_score_and_threshold(runs: dict[str, Path], tmp_path: Path) -> None:
    import onnx

    from convae import __version__

    run = Run.open(runs["conv-pool"])
    path = export_run(run, tmp_path / "a.onnx", "detect").path
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    threshold = anomaly.load_threshold(run.path)
    assert props[runtime.VERSION] == __version__
    assert props[runtime.DIGEST] == run.digest
    assert props[runtime.PRESET] == "conv-pool"
    assert props[runtime.SHAPE] == "1x16x16"
    assert props[runtime.SCORE] == threshold.score
    assert float(props[runtime.THRESHOLD]) == threshold.value
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["reconstruction", "anomaly_map", "score", "anomalous"]
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"  # dynamic batch size


# -- the command line --------------------------------------------------------------------------
def _one_error(code: int, out: str, err: str) -> str:
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_export_errors_are_one_line_and_write_nothing(cli, runs: dict[str, Path], bars: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    no_threshold = tmp_path / "no-threshold"
    shutil.copytree(runs["conv-pool"], no_threshold, ignore=shutil.ignore_patterns("threshold.json"))
    out = tmp_path / "x.onnx"
    cases = [
        (("export", tmp_path / "missing", "--out", out), "no such run directory"),
        (("export", no_threshold, "--what", "detect", "--out", out), "convae detect"),
        (("export", no_threshold, "--what", "classify", "--out", out), "not classify"),
        (("export", no_threshold, "--what", "everything", "--out", out), "--what must be one of"),
        (("export", no_threshold, "--out", tmp_path / "nowhere" / "x.onnx"), "does not exist"),
        (("export", no_threshold, "--out", tmp_path), "is a folder"),
    ]
    for args, message in cases:
        assert message in _one_error(*cli(*args)), args
    assert not out.exists()
    images = bars / "test" / "vertical"
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 not a protobuf")
    foreign = tmp_path / "foreign.onnx"
    node = helper.make_node("Identity", ["images"], ["score"])
    value = helper.make_tensor_value_info
    graph = helper.make_graph([node], "g", [value("images", TensorProto.FLOAT, [1])], [value("score", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(foreign))
    for path, message in ((corrupt, "not a readable ONNX model"), (foreign, "not a file made by `convae export`"),
                          (tmp_path / "absent.onnx", "no such file")):
        assert message in _one_error(*cli("detect", runs["conv-pool"], images, "--onnx", path)), path


def test_a_file_from_another_run_is_refused(cli, runs: dict[str, Path], bars: Path, tmp_path: Path) -> None:
    path = export_run(runs["unpool"], tmp_path / "u.onnx", "detect").path
    line = _one_error(*cli("detect", runs["conv-pool"], bars / "test", "--onnx", path))
    assert "another run" in line and "convae export" in line
    line = _one_error(*cli("reconstruct", runs["conv-pool"], bars / "test", "--onnx", path, "--out", tmp_path / "o"))
    assert "--what reconstruct" in line
    assert not (tmp_path / "o").exists()
    for args in (["--onnx", path, "--fit"], ["--onnx", path, "--threshold", "0.5"], ["--engine", "onnx"],
                 ["--engine", "tensorflow"], ["--engine", "torch", "--onnx", path]):
        _one_error(*cli("detect", runs["unpool"], bars / "test", *args))


def test_verbs_with_engine_onnx_give_torch_results(cli, runs: dict[str, Path], bars: Path, tmp_path: Path) -> None:
    run = runs["conv"]  # the hybrid score: normal codes, distances and standardisation inside the graph
    detector = tmp_path / "det.onnx"
    code, out, err = cli("export", run, "--what", "detect", "--out", detector)
    assert code == 0, err
    assert "wrote" in out and "max |diff|" in out
    rows = {}
    for engine in ("torch", "onnx"):
        extra = ["--onnx", detector] if engine == "onnx" else []
        code, _, err = cli("detect", run, bars / "test", "--csv", tmp_path / f"{engine}.csv", "--device", "cpu",
                           "--heatmaps", tmp_path / f"heat-{engine}", *extra)
        assert code == 0, err
        rows[engine] = list(csv.DictReader((tmp_path / f"{engine}.csv").open()))
    assert len(rows["onnx"]) == len(rows["torch"]) == 24
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert a["path"] == b["path"] and a["verdict"] == b["verdict"] and a["threshold"] == b["threshold"]
        assert abs(float(a["score"]) - float(b["score"])) <= TOLERANCE + 1e-5 * abs(float(a["score"]))
    assert len(list((tmp_path / "heat-onnx").glob("*.png"))) == 24

    recon = tmp_path / "rec.onnx"
    assert cli("export", run, "--out", recon)[0] == 0
    for engine in ("torch", "onnx"):
        extra = ["--engine", "onnx", "--onnx", recon] if engine == "onnx" else []
        code, _, err = cli("reconstruct", run, bars / "test" / "vertical", "--out", tmp_path / engine, "--device",
                           "cpu", *extra)
        assert code == 0, err
    for path in sorted((tmp_path / "torch").glob("*.png")):
        a = np.asarray(Image.open(path), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "onnx" / path.name), dtype=np.int16)
        assert np.abs(a - b).max() <= 1, path


def test_runtime_runs_without_torch(runs: dict[str, Path], bars: Path, tmp_path: Path) -> None:
    """A process where importing torch fails still detects with the exported file, and agrees with torch."""
    run = Run.open(runs["conv-pool"])
    path = export_run(run, tmp_path / "a.onnx", "detect").path
    files = sorted((bars / "test").rglob("*.png"))[:6]
    script = (
        "import sys, json; sys.modules['torch'] = None\n"
        "from convae.runtime import Exported\n"
        f"found = Exported.load({str(path)!r}).detect({[str(f) for f in files]!r})\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "print(json.dumps([[r['score'], r['verdict']] for r in found]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    threshold = anomaly.load_threshold(run.path)
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(f))).unsqueeze(0) for f in files])
    scores = anomaly.score_images(run.model(), images, threshold.score)
    for (score, verdict), want in zip(got, scores):
        assert abs(score - want) <= TOLERANCE
        assert verdict == ("anomalous" if want > threshold.value else "normal")


def test_runtime_reads_other_sizes_and_colours_like_the_verbs(runs: dict[str, Path], tmp_path: Path) -> None:
    exported = runtime.Exported.load(export_run(runs["conv-pool"], tmp_path / "r.onnx").path)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(photo)
    out, note = exported.restore(photo)
    assert out.shape == (1, 40, 30)
    assert "RGB converted to gray" in note and "resized 40×30 → 16×16" in note
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    results = exported.__class__.load(export_run(runs["conv-pool"], tmp_path / "a.onnx", "detect").path).detect(
        [photo, broken])
    assert "score" in results[0] and "not a readable image" in results[1]["error"]
    assert runtime.Exported.load(tmp_path / "a.onnx").detect([tmp_path / "absent.png"])[0]["error"] == "no such file"
    with pytest.raises(ConvaeError, match="--what reconstruct"):
        runtime.Exported.load(tmp_path / "a.onnx").restore(photo)


def test_training_and_the_cli_never_load_onnx() -> None:
    script = ("import sys, convae.cli, convae.training, convae.applications.anomaly, convae.applications.restore\n"
              "print(sorted(m for m in ('onnx', 'onnxruntime') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_classify_predict_and_denoise_with_onnx_match_torch(cli, bars: Path, tmp_path: Path) -> None:
    classifier = tmp_path / "cnn"
    code, _, err = cli("classify", "train", "--dataset", f"folder:{bars}", "--model", "cnn", "--epochs", "1",
                       "--batch-size", "16", "--threads", "1", "--device", "cpu", "--out", classifier)
    assert code == 0, err
    assert cli("export", classifier, "--out", tmp_path / "cnn.onnx")[0] == 0
    found = {}
    for engine in ("torch", "onnx"):
        extra = ["--onnx", tmp_path / "cnn.onnx"] if engine == "onnx" else []
        code, out, err = cli("classify", "predict", classifier, bars / "test", "--json", "--device", "cpu", *extra)
        assert code == 0, err
        found[engine] = [json.loads(line) for line in out.splitlines()]
    assert [r["label"] for r in found["torch"]] == [r["label"] for r in found["onnx"]]
    for a, b in zip(found["torch"], found["onnx"]):
        assert abs(a["probability"] - b["probability"]) <= TOLERANCE
    denoiser = tmp_path / "denoise"
    config = TrainConfig(dataset=f"folder:{bars}", model="conv-pool", task="denoise", epochs=1, batch_size=8,
                         seed=0, threads=1, device="cpu")
    Trainer(config, denoiser, progress=False).fit()
    assert cli("export", denoiser, "--out", tmp_path / "d.onnx")[0] == 0
    for engine in ("torch", "onnx"):
        extra = ["--onnx", tmp_path / "d.onnx"] if engine == "onnx" else []
        code, _, err = cli("denoise", denoiser, bars / "test" / "horizontal", "--out", tmp_path / f"out-{engine}",
                           "--device", "cpu", *extra)
        assert code == 0, err
    pairs = [(p, tmp_path / "out-onnx" / p.name) for p in sorted((tmp_path / "out-torch").glob("*.png"))]
    assert len(pairs) == 12
    for a, b in pairs:
        assert np.abs(np.asarray(Image.open(a), np.int16) - np.asarray(Image.open(b), np.int16)).max() <= 1


def test_importing_the_runtime_loads_no_torch_and_samples_no_cpu() -> None:
    """The deployment runtime starts cheap: no torch, no OpenMP policy, no /proc/stat sampling."""
    script = ("import sys, builtins, os\n"
              "opened = []\n"
              "real = builtins.open\n"
              "builtins.open = lambda f, *a, **k: (opened.append(str(f)), real(f, *a, **k))[1]\n"
              "import convae.runtime\n"
              "print('torch' in sys.modules, '/proc/stat' in opened, 'OMP_WAIT_POLICY' in os.environ)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "False"]
    cli = subprocess.run([sys.executable, "-c", "import os, convae.cli; print(os.environ.get('OMP_WAIT_POLICY'))"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert cli.stdout.strip() == "PASSIVE", cli.stderr  # the command still picks its policy
