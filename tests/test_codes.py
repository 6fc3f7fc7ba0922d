"""Compact codes: encode/decode round trips, the .cvc container, rate–distortion, the code space.

Two tiny runs are trained once per module on a self-made folder dataset of 16×16 bar images
(horizontal bars class 0, vertical class 1): the dense-code ``conv`` preset and the
``unpool`` preset, whose codes carry max-pool switches that the code files must store.
"""

from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import bar_image, write_bars
from PIL import Image

from convae.applications import codes as app
from convae.applications.codes.format import FORMAT_VERSION, MAGIC, read_codes, to_bytes
from convae.core.errors import ConvaeError, DataError
from convae.data import ImageSet, load_dataset
from convae.models import SwitchedCode, code_values
from convae.run import Run, load_model, tensors_checksum
from convae.training import TrainConfig, Trainer

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bars(tmp_path_factory.mktemp("code-bars"), {"train": 96, "test": 30}, seed=0)


def _train(bars: Path, where: Path, model: str, args: dict) -> Path:
    run = where / model
    config = TrainConfig(dataset=f"folder:{bars}", model=model, model_args=args, epochs=4, batch_size=16, lr=5e-3,
                         seed=0, threads=1)
    Trainer(config, run, progress=False).fit()
    return run


@pytest.fixture(scope="module")
def runs(bars: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("code-runs")
    return {
        "conv": _train(bars, where, "conv", {"latent_dim": 6, "width": 4, "levels": 1}),
        "unpool": _train(bars, where, "unpool", {"maps": 2, "pool": 2}),
    }


def _reference(run: Path, images: torch.Tensor, bits: int) -> tuple[torch.Tensor, np.ndarray]:
    """model.decode(dequantize(quantize(model.encode(x)))) in this process, and the quantized values."""
    model, _ = load_model(run)
    with torch.no_grad():
        code = model.encode(images.float().div(255))
        values = code_values(code)
        codes = app.quantize(values, bits, tensors_checksum(model.state_dict()))
        dequantized = app.dequantize(codes)
        code_in = SwitchedCode(dequantized, code.switches) if isinstance(code, SwitchedCode) else dequantized
        return model.decode(code_in), codes.q


@pytest.mark.parametrize("preset", ["conv", "unpool"])
@pytest.mark.parametrize("bits,fmt", [(4, "bin"), (6, "npz"), (8, "bin"), (32, "bin"), (32, "npz")])
def test_decode_of_an_encoded_file_is_bit_exact(cli, runs, bars, tmp_path, preset, bits, fmt):
    run = runs[preset]
    out = tmp_path / f"codes.{'cvc' if fmt == 'bin' else 'npz'}"
    code, stdout, stderr = cli("encode", run, "--dataset", f"folder:{bars}", "--out", out, "--bits", bits,
                               "--device", "cpu")
    assert code == 0, stderr
    assert "bits per pixel" in stdout
    test = load_dataset(f"folder:{bars}", "test")
    expected, expected_q = _reference(run, test.images, bits)
    model, _ = load_model(run)
    stored = read_codes(out)
    assert len(stored) == len(test)
    np.testing.assert_array_equal(stored.q, expected_q)
    assert torch.equal(app.decode_codes(model, stored), expected)  # bit for bit
    assert (len(stored.switches) == 1) == (preset == "unpool")
    # The PNGs decode writes are that output, rounded to uint8.
    code, _, stderr = cli("decode", run, out, "--out", tmp_path / "png", "--device", "cpu")
    assert code == 0, stderr
    names = stored.output_names()
    assert names[0] == "test-00000.png"
    first = np.asarray(Image.open(tmp_path / "png" / names[3]))
    np.testing.assert_array_equal(first, app.to_uint8(expected[3])[0].numpy())


def test_float_codes_with_switches_reproduce_the_forward_pass(runs, bars):
    """Stored switches are lossless: bits=32 unpool codes decode to exactly model(x)."""
    model, _ = load_model(runs["unpool"])
    test = load_dataset(f"folder:{bars}", "test")
    x = test.images.float().div(255)
    values, switches = app.encode_batches(model, test.images)
    codes = app.quantize(values, 32, tensors_checksum(model.state_dict()), switches)
    back = read_codes_bytes(to_bytes(codes))
    with torch.no_grad():
        assert torch.equal(app.decode_codes(model, back), model(x))
    original = model.encode(x).switches[0][0]
    assert torch.equal(app.flat_indices(back.switches[0]), original)
    assert back.switches[0].bits == 2  # a 2×2 window: 4 positions, 2 bits each


def read_codes_bytes(data: bytes):
    from convae.applications.codes.format import from_bytes

    return from_bytes(data, "memory.cvc")


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_quantization_error_is_at_most_half_a_step(bits):
    values = torch.randn(50, 3, 4, 4) * torch.tensor([1.0, 10.0, 0.01]).view(1, 3, 1, 1)
    values[:, 2] = 0.5  # a constant channel: step 0, stored exactly
    codes = app.quantize(values, bits, "00" * 32)
    assert codes.q.max() < 2**bits
    error = (app.dequantize(codes) - values).abs().amax(dim=(0, 2, 3))
    step = torch.from_numpy(codes.step)
    assert bool((error <= step / 2 + 1e-6 * (1 + values.abs().amax())).all())
    assert float(error[2]) == 0.0
    assert codes.lo[0] <= float(values[:, 0].min()) and codes.lo[0] + (2**bits - 1) * codes.step[0] >= float(values[:, 0].max())
    back = read_codes_bytes(to_bytes(codes))
    np.testing.assert_array_equal(back.q, codes.q)
    assert torch.equal(app.dequantize(back), app.dequantize(codes))


def test_binary_header_is_small_and_documented():
    """The header size is exactly what codes_format documents; every byte is in the file size."""
    values = torch.rand(10, 6)
    codes = app.quantize(values, 4, "ab" * 32)
    data = to_bytes(codes)
    assert data[:4] == MAGIC and data[4] == FORMAT_VERSION and data[5] == 4
    assert data[8:16] == bytes.fromhex("ab" * 8)
    assert struct.unpack("<I", data[16:20])[0] == 10
    header = 20 + 2 * 1 + 1 + 4 * 6  # fixed part, shape, switch-level count, float16 lo+step
    (payload,) = struct.unpack("<I", data[header:header + 4])
    assert len(data) == header + 4 + payload + 4  # the CRC-32 of everything before it closes the file
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])
    assert payload <= (10 * 6 * 4 + 7) // 8  # packed at 4 bits (zlib only when smaller)


def _encode(cli, run, bars, out, *extra):
    code, _, stderr = cli("encode", run, "--dataset", f"folder:{bars}", "--out", out, "--limit", 8, "--device", "cpu", *extra)
    assert code == 0, stderr
    return out


def _one_error_line(cli, *args) -> str:
    code, _, stderr = cli(*args)
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


def test_bad_code_files_give_one_clear_line(cli, runs, bars, tmp_path):
    run = runs["conv"]
    good = _encode(cli, run, bars, tmp_path / "good.cvc").read_bytes()
    cases = {
        "magic.cvc": (b"XXXX" + good[4:], "not a convae code file"),
        "newer.cvc": (good[:4] + bytes([FORMAT_VERSION + 1]) + good[5:], "newer"),
        "older.cvc": (good[:4] + bytes([0]) + good[5:], "older"),
        "short.cvc": (good[:-3], "truncated"),
        "header.cvc": (good[:12], "truncated"),
        "extra.cvc": (good + b"\0\0", "unexpected bytes"),
    }
    for name, (data, words) in cases.items():
        (tmp_path / name).write_bytes(data)
        line = _one_error_line(cli, "decode", run, tmp_path / name, "--out", tmp_path / "out")
        assert name in line and words in line, line
    # A foreign .npz and an .npz of another format version.
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    assert "not a convae code file" in _one_error_line(cli, "decode", run, tmp_path / "foreign.npz", "--out", tmp_path / "o")
    npz = _encode(cli, run, bars, tmp_path / "good.npz")
    arrays = dict(np.load(npz))
    arrays["version"] = np.array(FORMAT_VERSION + 1)
    np.savez(tmp_path / "v2.npz", **arrays)
    line = _one_error_line(cli, "decode", run, tmp_path / "v2.npz", "--out", tmp_path / "o")
    assert "v2.npz" in line and f"version {FORMAT_VERSION + 1}" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_decode_refuses_another_runs_codes(cli, runs, bars, tmp_path):
    codes = _encode(cli, runs["conv"], bars, tmp_path / "conv.cvc")
    line = _one_error_line(cli, "decode", runs["unpool"], codes, "--out", tmp_path / "out")
    assert "conv.cvc" in line and "another run" in line
    npz = _encode(cli, runs["conv"], bars, tmp_path / "conv.npz")
    assert "another run" in _one_error_line(cli, "decode", runs["unpool"], npz, "--out", tmp_path / "out")


def test_encode_argument_errors(cli, runs, bars, tmp_path):
    run = runs["conv"]
    assert "--bits" in _one_error_line(cli, "encode", run, "--dataset", f"folder:{bars}", "--out", tmp_path / "c.npz",
                                       "--bits", 5)
    assert "not both" in _one_error_line(cli, "encode", run, bars, "--dataset", f"folder:{bars}", "--out", tmp_path / "c.npz")
    assert "nothing to encode" in _one_error_line(cli, "encode", run, "--out", tmp_path / "c.npz")
    assert "missing.png" in _one_error_line(cli, "encode", run, tmp_path / "missing.png", "--out", tmp_path / "c.npz")
    assert not (tmp_path / "c.npz").exists()


def test_encode_image_files_and_folders(cli, runs, bars, tmp_path):
    """User files (one RGB and 24×24, so converted) keep their names through encode and decode."""
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(bar_image(np.random.default_rng(1), True)).save(folder / "a.png")
    Image.fromarray(np.full((24, 24, 3), 200, np.uint8)).save(folder / "sub" / "b.png")
    code, stdout, stderr = cli("encode", runs["unpool"], folder, "--out", tmp_path / "mine.cvc", "--bits", 6,
                               "--device", "cpu")
    assert code == 0, stderr
    assert "1 image(s) converted" in stdout
    stored = read_codes(tmp_path / "mine.cvc")
    assert stored.output_names() == ["a.png", "sub/b.png"]
    code, _, stderr = cli("decode", runs["unpool"], tmp_path / "mine.cvc", "--out", tmp_path / "dec", "--device", "cpu")
    assert code == 0, stderr
    assert Image.open(tmp_path / "dec" / "sub" / "b.png").size == (SIZE, SIZE)
    npz = np.load(_encode_files_npz(cli, runs["unpool"], folder, tmp_path))
    assert [Path(p).name for p in npz["ids"]] == ["a.png", "b.png"]


def _encode_files_npz(cli, run, folder, tmp_path):
    code, _, stderr = cli("encode", run, folder, "--out", tmp_path / "mine.npz", "--device", "cpu")
    assert code == 0, stderr
    return tmp_path / "mine.npz"


def test_npz_keeps_ids_and_labels(cli, runs, bars, tmp_path):
    out = _encode(cli, runs["conv"], bars, tmp_path / "c.npz")
    stored = read_codes(out)
    test = load_dataset(f"folder:{bars}", "test").subset(range(8))
    assert stored.labels.tolist() == test.labels.tolist()
    assert stored.classes == test.classes
    assert len(stored.ids) == 8 and len(stored.weights_hash) == 64


def test_rate_distortion_counts_headers(cli, runs, bars):
    run = runs["conv"]
    code, stdout, stderr = cli("evaluate", run, "--rate", "--rate-images", 40, "--device", "cpu")
    assert code == 0, stderr
    assert "bpp amortised" in stdout
    result = json.loads((run / "rate-test.json").read_text())
    rows = result["rows"]
    convae = {row["bits"]: row for row in rows if row["codec"] == "convae"}
    assert sorted(convae) == [4, 6, 8, 32]
    assert convae[4]["bpp_amortised"] < convae[8]["bpp_amortised"] < convae[32]["bpp_amortised"]
    assert convae[4]["psnr"] <= convae[8]["psnr"] + 0.05
    assert {row["codec"] for row in rows} == {"convae", "PNG", "JPEG", "WebP"}
    for row in rows:
        assert row["bpp_per_image"] > row["bpp_amortised"] > 0, row  # a header repeated per file costs more
    png = next(row for row in rows if row["codec"] == "PNG")
    assert png["psnr"] is None and png["ssim"] == pytest.approx(1.0)
    # The amortised convae rate is the real size of one .cvc file of the 40 codes.
    model, config = load_model(run)
    data = app.sample_images(app.dataset_images(Run.open(run), f"folder:{bars}", "test"), 40)
    values, _ = app.encode_batches(model, data.images)
    size = len(to_bytes(app.quantize(values, 6, tensors_checksum(model.state_dict()))))
    assert convae[6]["bpp_amortised"] == pytest.approx(8 * size / 40 / SIZE**2)
    assert (run / "figures" / "rate_distortion.png").exists()
    code, _, _ = cli("report", run)
    page = (run / "report.html").read_text()
    assert code == 0 and "rate_distortion" in page and "bpp_amortised" in page


def test_classic_codecs_on_rgb_images():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (6, 3, 12, 12), dtype=np.uint8))
    rows = app.classic_codec_rows(ImageSet(images, torch.zeros(6, dtype=torch.int64), ["x"], "test", "rgb"))
    jpeg = [row for row in rows if row["codec"] == "JPEG"]
    assert next(r for r in rows if r["codec"] == "PNG")["psnr"] is None  # lossless
    assert all(row["psnr"] < 60 for row in jpeg) and jpeg[0]["psnr"] < jpeg[-1]["psnr"]
    assert jpeg[0]["bpp_per_image"] < jpeg[-1]["bpp_per_image"]
    assert all(row["header_bytes"] > 0 for row in rows)


@pytest.mark.parametrize("suffix", ["csv", "npz"])
def test_embed_exports_codes_with_labels(cli, runs, bars, tmp_path, suffix):
    out = tmp_path / f"emb.{suffix}"
    code, _, stderr = cli("embed", runs["conv"], "--dataset", f"folder:{bars}", "--out", out, "--device", "cpu")
    assert code == 0, stderr
    test = load_dataset(f"folder:{bars}", "test")
    model, _ = load_model(runs["conv"])
    with torch.no_grad():
        expected = model.encode(test.images.float().div(255))
    if suffix == "csv":
        with open(out, newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0][:4] == ["id", "label", "class", "z0"] and len(rows[0]) == 3 + 6
        assert [int(r[1]) for r in rows[1:]] == test.labels.tolist()
        np.testing.assert_array_equal(np.array([[float(v) for v in r[3:]] for r in rows[1:]], np.float32),
                                      expected.numpy())
    else:
        data = np.load(out)
        assert data["labels"].tolist() == test.labels.tolist()
        np.testing.assert_array_equal(data["codes"], expected.numpy())
    assert "must end in .csv or .npz" in _one_error_line(cli, "embed", runs["conv"], "--out", tmp_path / "e.txt")


@pytest.mark.slow
def test_show_latent_draws_maps_and_interpolations(cli, runs):
    for run in runs.values():
        code, stdout, stderr = cli("show", run, "--latent", "--device", "cpu")
        assert code == 0, stderr
        for name in ("latent_pca.png", "latent_tsne.png", "interpolations.png", "reconstructions.png"):
            assert (run / "figures" / name).exists(), name
    code, _, _ = cli("report", runs["conv"])
    page = (runs["conv"] / "report.html").read_text()
    assert code == 0 and "latent_pca" in page and "interpolations" in page


def test_weights_hash_changes_with_any_weight(runs):
    model, _ = load_model(runs["conv"])
    before = tensors_checksum(model.state_dict())
    assert before == tensors_checksum(load_model(runs["conv"])[0].state_dict())
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-6
    assert tensors_checksum(model.state_dict()) != before


def test_code_file_errors_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such code file"):
        read_codes(tmp_path / "nothing.cvc")
    with pytest.raises(ConvaeError, match="--bits"):
        app.quantize(torch.zeros(2, 3), 7, "00" * 32)


def test_decode_refuses_names_outside_the_output_folder(cli, runs, tmp_path):
    """A crafted code file cannot make decode write outside --out."""
    model, _ = load_model(runs["conv"])
    codes = app.quantize(torch.zeros(1, 6), 8, tensors_checksum(model.state_dict()))
    (tmp_path / "evil.cvc").write_bytes(to_bytes(codes, {"names": ["../evil.png"]}))
    line = _one_error_line(cli, "decode", runs["conv"], tmp_path / "evil.cvc", "--out", tmp_path / "out")
    assert "evil.cvc" in line and "refusing output name" in line
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "out").exists()


def test_interpolation_pairs_cross_classes():
    assert app.interpolation_pairs([0, 0, 1, 1, 2, 3], 3) == [(0, 2), (4, 5), (1, 3)]
    assert app.interpolation_pairs([-1] * 5, 4) == [(0, 1), (2, 3)]  # unlabelled: consecutive images
    assert app.interpolation_pairs([7, 7, 7], 2) == [(0, 1)]


def test_samples_are_seeded_and_span_the_split(bars):
    test = load_dataset(f"folder:{bars}", "test")  # sorted by class: the first half is class 0
    sample = app.sample_images(test, 20)
    assert len(sample) == 20 and set(sample.labels.tolist()) == {0, 1}
    assert torch.equal(sample.images, app.sample_images(test, 20).images)
    assert app.sample_images(test, None) is test
