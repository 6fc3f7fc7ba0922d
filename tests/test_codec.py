"""The learned codecs: rate–distortion training, real bitstreams, bit-exact decoding, refusals.

Tiny codecs (width 8) on 32×32 smooth colour pictures train in seconds; what is checked is
the contract of issue #27, not quality (benchmarks/codes.py measures that).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_photo
from PIL import Image

from convae.applications.codes.bitstream import OVERHEAD, ImageRecord, SymbolReader, SymbolWriter
from convae.applications.codes.entropy_tables import TOTAL, integer_counts
from convae.run import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ("--model-arg", "width=8", "--model-arg", "latent=8")


def _folder(root: Path, count: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(smooth_photo(rng, 32, 32)).save(root / f"p{i:02d}.png")
    return root


def _train(cli, data: Path, out: Path, model: str = "codec", lam: str = "0.013", epochs: int = 2,
           batch: int = 8) -> Path:
    code, _, err = cli("train", "--dataset", f"folder:{data}", "--model", model, *TINY, "--loss", f"rd:{lam}",
                       "--epochs", str(epochs), "--lr", "0.005" if epochs == 2 else "0.01", "--batch-size", str(batch),
                       "--out", out, "--no-progress", "--logger", "none")
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """A trained codec and codec-hyper run, and a folder of odd-sized pictures to code."""
    from test_cli_contract import _run_cli

    root = tmp_path_factory.mktemp("codec")
    data = _folder(root / "data")
    made = {model: _train(lambda *args: _run_cli(list(args)), data, root / model, model)
            for model in ("codec", "codec-hyper")}
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    rng = np.random.default_rng(5)
    Image.fromarray(smooth_photo(rng, 45, 61)).save(photos / "odd.png")
    Image.fromarray(smooth_photo(rng, 17, 33)).save(photos / "sub" / "small.png")
    return made, photos


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))}


@pytest.mark.parametrize("model", ["codec", "codec-hyper"])
def test_the_file_is_the_rate_and_holds_16_bytes_beyond_its_payload(runs, cli, tmp_path: Path, model: str) -> None:
    made, photos = runs
    code, out, err = cli("encode", made[model], photos, "--out", tmp_path / "codes")
    assert code == 0, err
    files = sorted((tmp_path / "codes").rglob("*.cvc"))
    assert [f.relative_to(tmp_path / "codes").as_posix() for f in files] == ["odd.cvc", "sub/small.cvc"]
    size = sum(f.stat().st_size for f in files)
    pixels = 45 * 61 + 17 * 33
    assert f"{size:,} bytes = {8 * size / pixels:.4f} bits per pixel" in out
    assert "the model's estimate:" in out
    for file in files:
        data = file.read_bytes()
        record = ImageRecord.from_bytes(data, str(file))
        assert len(data) - len(record.payload) == OVERHEAD <= 16
        assert (record.height, record.width) in ((45, 61), (17, 33))


@pytest.mark.parametrize("model", ["codec", "codec-hyper"])
def test_decoding_is_bit_exact_across_processes_and_thread_counts(runs, cli, tmp_path: Path, model: str) -> None:
    made, photos = runs
    assert cli("encode", made[model], photos, "--out", tmp_path / "codes")[0] == 0
    outputs = []
    for threads in (1, 2):
        script = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); "
                  "from convae.applications.codes import decode_file; decode_file(sys.argv[2], sys.argv[3], sys.argv[4])")
        target = tmp_path / f"back{threads}"
        done = subprocess.run([sys.executable, "-c", script, str(threads), str(made[model]), str(tmp_path / "codes"),
                               str(target)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outputs.append(_pixels(target))
    assert outputs[0].keys() == {"odd.png", "sub/small.png"}
    for name in outputs[0]:
        assert np.array_equal(outputs[0][name], outputs[1][name])
    assert outputs[0]["odd.png"].shape == (45, 61, 3)
    # and what the model itself reconstructs from the rounded latent, in float32: the same picture, near enough
    from convae.run import Run

    net = Run.open(made[model]).model()
    image = torch.from_numpy(np.asarray(Image.open(photos / "odd.png"))).permute(2, 0, 1).float().div(255)
    with torch.no_grad():
        direct = torch.round(net(image[None]).clamp(0, 1) * 255)[0].permute(1, 2, 0).numpy()
    assert np.abs(direct - outputs[0]["odd.png"]).max() <= 1


def test_a_pack_holds_every_image_and_decodes_to_the_same_pixels(runs, cli, tmp_path: Path) -> None:
    made, photos = runs
    assert cli("encode", made["codec"], photos, "--out", tmp_path / "codes")[0] == 0
    code, out, err = cli("encode", made["codec"], photos, "--out", tmp_path / "all.cvc")
    assert code == 0, err
    assert f"{(tmp_path / 'all.cvc').stat().st_size:,} bytes" in out
    assert cli("decode", made["codec"], tmp_path / "codes", "--out", tmp_path / "a")[0] == 0
    code, out, err = cli("decode", made["codec"], tmp_path / "all.cvc", "--out", tmp_path / "b")
    assert code == 0 and "wrote 2 PNG(s)" in out, err
    first, second = _pixels(tmp_path / "a"), _pixels(tmp_path / "b")
    assert first.keys() == second.keys() == {"odd.png", "sub/small.png"}
    assert all(np.array_equal(first[k], second[k]) for k in first)


def _one_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_flipped_byte_a_truncated_file_and_a_foreign_run_are_refused_in_one_line(runs, cli, tmp_path: Path) -> None:
    made, photos = runs
    assert cli("encode", made["codec"], photos / "odd.png", "--out", tmp_path / "codes")[0] == 0
    good = (tmp_path / "codes" / "odd.cvc").read_bytes()
    for name, data, needle in [("flipped.cvc", good[:20] + bytes([good[20] ^ 4]) + good[21:], "checksum"),
                               ("short.cvc", good[: len(good) // 2], "checksum"),
                               ("stub.cvc", good[:9], "truncated"),
                               ("text.cvc", b"hello, world", "not a convae code file")]:
        (tmp_path / name).write_bytes(data)
        code, _, err = cli("decode", made["codec"], tmp_path / name, "--out", tmp_path / "back")
        _one_error(code, err, name, needle)
        assert not (tmp_path / "back").exists()
    code, _, err = cli("decode", made["codec-hyper"], tmp_path / "codes" / "odd.cvc", "--out", tmp_path / "back")
    _one_error(code, err, "odd.cvc", "another model")
    assert not (tmp_path / "back").exists()


def test_codec_runs_refuse_fixed_bit_options_and_other_losses(runs, cli, tmp_path: Path) -> None:
    made, photos = runs
    code, _, err = cli("encode", made["codec"], photos, "--out", tmp_path / "c", "--bits", "6")
    _one_error(code, err, "codec run", "--bits")
    for args, needle in [(("--model", "codec", "--loss", "mse"), "rate–distortion loss"),
                         (("--model", "conv", "--loss", "rd:0.01"), "add --model codec"),
                         (("--model", "codec", "--loss", "rd:zero"), "positive number"),
                         (("--model", "codec", "--loss", "rd:-1"), "positive number"),
                         (("--model", "codec", "--loss", "rd:x"), "--loss rd:x: LAMBDA"),  # text, not an emoji
                         (("--model", "codec", "--task", "denoise"), "--task reconstruct")]:
        code, _, err = cli("train", "--dataset", "mnist-sample", *args, "--epochs", "1", "--out", tmp_path / "r")
        _one_error(code, err, needle)
        assert not (tmp_path / "r").exists()
    (tmp_path / "exp.toml").write_text('model = "codec"\nloss = "rd:abc"\n')
    code, _, err = cli("train", "--config", tmp_path / "exp.toml", "--out", tmp_path / "r")
    _one_error(code, err, "exp.toml: loss rd:abc: LAMBDA must be a positive number")  # named where it came from


@pytest.mark.slow
def test_the_rate_falls_as_lambda_falls(cli, tmp_path: Path) -> None:
    data = _folder(tmp_path / "data", count=48, seed=2)
    rates = {}
    for lam in ("0.5", "0.0005"):
        run = _train(cli, data, tmp_path / lam, "codec", lam, epochs=8, batch=4)
        rows = read_metrics(run)
        rates[lam] = rows[-1]["test_bpp_estimate"]
        code, out, err = cli("encode", run, data, "--out", tmp_path / f"codes-{lam}")
        assert code == 0, err
        rates[lam + " file"] = sum(f.stat().st_size for f in (tmp_path / f"codes-{lam}").glob("*.cvc"))
    assert rates["0.0005"] < 0.8 * rates["0.5"]
    assert rates["0.0005 file"] < rates["0.5 file"]


def test_an_interrupted_codec_run_resumes_to_the_same_weights(cli, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    data = _folder(tmp_path / "data", count=24, seed=3)
    whole = _train(cli, data, tmp_path / "whole")
    code, _, err = cli("train", "--dataset", f"folder:{data}", "--model", "codec", *TINY, "--loss", "rd:0.013",
                       "--epochs", "1", "--lr", "0.005", "--batch-size", "8", "--out", tmp_path / "half",
                       "--no-progress", "--logger", "none")
    assert code == 0, err
    code, _, err = cli("train", "--out", tmp_path / "half", "--epochs", "2", "--resume", "--no-progress")
    assert code == 0, err
    first, second = load_file(whole / "model.safetensors"), load_file(tmp_path / "half" / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    config = json.loads((tmp_path / "half" / "config.json").read_text())
    assert config["training"]["loss"] == "rd:0.013"


def test_values_beyond_a_table_escape_and_come_back() -> None:
    from convae.applications.codes.entropy_tables import SymbolTable

    table = SymbolTable(-2, integer_counts(np.array([0.1, 0.2, 0.4, 0.2, 0.1, 1e-6])))
    values = np.array([-2, 0, 2, 40000, -7, 1, 300], dtype=np.int64)
    writer = SymbolWriter()
    writer.write([(values, table), (np.zeros(0, np.int64), table)])
    writer.write([(values[::-1].copy(), table)])
    reader = SymbolReader(writer.payload())
    first, empty = reader.read([(len(values), table), (0, table)])
    (second,) = reader.read([(len(values), table)])
    expected = np.clip(values, -32767, 32767)
    assert np.array_equal(first, expected) and len(empty) == 0 and np.array_equal(second, expected[::-1])


def test_integer_counts_are_positive_and_sum_to_the_total() -> None:
    for pmf in (np.array([1.0, 0, 0]), np.full(5000, 1 / 5000), np.array([0.5, 0.25, 0.25])):
        counts = integer_counts(pmf)
        assert counts.sum() == TOTAL and counts.min() >= 1
    assert list(integer_counts(np.array([0.5, 0.25, 0.25]))) == [32768, 16384, 16384]


def test_the_report_of_a_codec_run_draws_its_rd_point_beside_jpeg_webp_and_avif(runs, cli) -> None:
    made, _ = runs
    run = made["codec"]
    code, out, err = cli("report", run)
    assert code == 0, err
    rate = json.loads((run / "rate-test.json").read_text())
    codecs = {row["codec"] for row in rate["rows"]}
    assert {"convae", "JPEG", "WebP", "AVIF"} <= codecs
    mine = next(row for row in rate["rows"] if row["codec"] == "convae")
    assert mine["setting"] == "rd:0.013" and mine["header_bytes"] == 16
    assert mine["bpp_per_image"] > mine["bpp_amortised"] > 0 and mine["bpp_estimate"] > 0
    page = (run / "report.html").read_text()
    assert "Rate–distortion" in page and "bpp_estimate" in page and (run / "figures" / "rate_distortion.png").exists()


@pytest.mark.parametrize("model", ["codec", "codec-hyper"])
def test_a_tall_image_goes_through_in_bands_and_comes_back_as_the_model_sees_it(model: str) -> None:
    from convae.applications.codes.codec import BAND, HALO, ImageCodec
    from convae.models import build_model

    torch.manual_seed(0)
    net = build_model(model, (3, 32, 32), {"width": 8, "latent": 8}).eval()
    height = 16 * (2 * BAND + 2 * HALO) + 7  # three bands
    image = torch.from_numpy(smooth_photo(np.random.default_rng(1), height, 21).copy()).permute(2, 0, 1).contiguous()
    codec = ImageCodec(net, "0123abcd" * 8)
    data, _ = codec.encode(image)
    back = codec.decode(data, "tall.cvc")
    with torch.no_grad():
        direct = torch.round(net(image[None].float().div(255)).clamp(0, 1) * 255)[0]
    assert back.shape == image.shape
    assert (back.float() - direct).abs().max() <= 1


def test_compare_shows_the_rate_and_quality_codec_runs_trained_to(runs, cli) -> None:
    made, _ = runs
    code, out, err = cli("compare", made["codec"], made["codec-hyper"])
    assert code == 0, err
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("|")}
    assert "test bpp (estimate)" in rows and "test PSNR (codec)" in rows
    assert "codec-hyper" in out


def test_a_dataset_split_is_coded_one_file_per_image_named_by_its_index(runs, cli, tmp_path: Path) -> None:
    made, _ = runs
    spec = json.loads((made["codec"] / "config.json").read_text())["training"]["dataset"]
    code, out, err = cli("encode", made["codec"], "--dataset", spec, "--split", "test", "--limit", "3",
                         "--out", tmp_path / "codes")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "codes").iterdir()) == ["test-00000.cvc", "test-00001.cvc",
                                                                      "test-00002.cvc"]
    assert cli("decode", made["codec"], tmp_path / "codes", "--out", tmp_path / "back")[0] == 0
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["test-00000.png", "test-00001.png",
                                                                     "test-00002.png"]


def test_train_report_of_a_codec_shows_its_rd_point_as_the_report_verb_does(cli, tmp_path: Path) -> None:
    data = _folder(tmp_path / "data", count=16, seed=4)
    code, out, err = cli("train", "--dataset", f"folder:{data}", "--model", "codec", *TINY, "--loss", "rd:0.013",
                         "--epochs", "1", "--batch-size", "8", "--out", tmp_path / "run", "--no-progress",
                         "--logger", "none", "--report")
    assert code == 0, err
    assert (tmp_path / "run" / "rate-test.json").exists()
    assert "Rate–distortion" in (tmp_path / "run" / "report.html").read_text()
