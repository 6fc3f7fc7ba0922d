"""Messy inputs: a corpus of bad files through every loader, plus hypothesis fuzzing.

Every file either gives correct data (convertible images are converted) or one clear line
that names it; loaders over many files report the bad ones and go on with the rest.
Loaders covered: the user's files (convae.data.files.read_image, and through it
``convae detect`` / ``convae denoise``), the image-folder dataset (``folder:PATH``) and the
IDX reader (MNIST / Fashion-MNIST).
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from convae.core.errors import DataError
from convae.data import load_dataset
from convae.data.files import read_image
from convae.data.idx import read_idx_images, read_idx_labels

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root reads files whatever their mode


# ----------------------------------------------------------------------------- the corpus


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width×height, followed by almost no data (a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _gradient(mode: str = "L", size: tuple[int, int] = (8, 6)) -> Image.Image:
    gray = Image.fromarray((np.arange(size[0] * size[1]).reshape(size[1], size[0]) * 5 % 256).astype(np.uint8))
    return gray.convert(mode)


def _float_tiff(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.float32), mode="F").save(buffer, format="TIFF")
    return buffer.getvalue()


#: name -> (bytes, expected): expected is (channels, height, width) for good data, or a
#: fragment of the one-line reason for a bad file.
def _corpus() -> dict[str, tuple[bytes, tuple[int, int, int] | str]]:
    png = _png_bytes(_gradient())
    jpeg = io.BytesIO()
    _gradient("RGB", (16, 16)).save(jpeg, format="JPEG")
    cmyk = io.BytesIO()
    _gradient("CMYK").save(cmyk, format="JPEG")
    gray16 = Image.fromarray((np.arange(48).reshape(6, 8) * 1000).astype(np.uint16))
    palette = _gradient("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    return {
        "gray.png": (png, (1, 6, 8)),
        "rgb.png": (_png_bytes(_gradient("RGB")), (1, 6, 8)),  # R=G=B is read as gray? no: RGB stays 3
        "rgba.png": (_png_bytes(_gradient("RGBA")), (3, 6, 8)),
        "gray_alpha.png": (_png_bytes(_gradient("LA")), (1, 6, 8)),
        "palette.png": (_png_bytes(palette), (1, 6, 8)),
        "sixteen_bit.png": (_png_bytes(gray16), (1, 6, 8)),
        "cmyk.jpg": (cmyk.getvalue(), (3, 6, 8)),
        "photo.jpg": (jpeg.getvalue(), (3, 16, 16)),
        "float_tiff_named.png": (_float_tiff(np.linspace(0, 1, 48).reshape(6, 8)), (1, 6, 8)),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "truncated.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 3], "truncated"),
        "zero_bytes.png": (b"", "empty file"),
        "zero_by_zero.png": (_png_header_only(0, 0), "not a readable image"),
        "bomb.png": (_png_header_only(60_000, 60_000), "pixel"),
        "just_over_the_cap.png": (_png_header_only(10_000, 5_001), "50000000-pixel limit"),
        "text.png": (b"this is not an image at all\n" * 10, "cannot identify image file"),
        "nan_pixels.png": (_float_tiff(np.array([[0.5, np.nan], [np.inf, 0.1]])), "NaN or Inf"),
    }


def _expected_channels(name: str, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    return (3, *shape[1:]) if name == "rgb.png" else shape


def _write_corpus(folder: Path) -> dict[Path, tuple[int, int, int] | str]:
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[Path, tuple[int, int, int] | str] = {}
    for name, (data, want) in _corpus().items():
        (folder / name).write_bytes(data)
        expected[folder / name] = _expected_channels(name, want) if isinstance(want, tuple) else want
    loop = folder / "loop.png"
    loop.symlink_to(loop.name)  # a symlink to itself
    expected[loop] = "symbolic link"
    locked = folder / "no_permission.png"
    locked.write_bytes(_png_bytes(_gradient()))
    locked.chmod(0)
    expected[locked] = (1, 6, 8) if AS_ROOT else "Permission denied"
    odd = folder / os.fsdecode(b"caf\xe9-latin1.png")  # not UTF-8: a surrogate-escaped str
    odd.write_bytes(_png_bytes(_gradient()))
    expected[odd] = (1, 6, 8)
    odd_bad = folder / os.fsdecode(b"broken-\xff.png")
    odd_bad.write_bytes(b"\x89PNG broken")
    expected[odd_bad] = "not a readable image"
    return expected


@pytest.fixture
def corpus(tmp_path: Path) -> dict[Path, tuple[int, int, int] | str]:
    return _write_corpus(tmp_path / "corpus")


# ----------------------------------------------------------------------------- the user's files


def test_every_corpus_file_reads_correctly_or_fails_in_one_line_naming_it(corpus) -> None:
    for path, want in corpus.items():
        if isinstance(want, tuple):
            image = read_image(path)
            assert image.dtype == torch.uint8 and tuple(image.shape) == want, path
        else:
            with pytest.raises(DataError) as caught:
                read_image(path)
            message = str(caught.value)
            assert message.startswith(str(path)) and "\n" not in message, message
            assert want in message, message


def test_converted_images_keep_their_pixels(corpus) -> None:
    folder = next(iter(corpus)).parent
    gray = read_image(folder / "gray.png")[0]
    assert torch.equal(read_image(folder / "gray_alpha.png")[0], gray)  # alpha dropped
    assert torch.equal(read_image(folder / "rgba.png")[1], gray)
    sixteen = read_image(folder / "sixteen_bit.png")[0].flatten().tolist()
    assert sixteen == [round(v * 1000 * 255 / 65535) for v in range(48)]
    floats = read_image(folder / "float_tiff_named.png")[0].flatten()
    assert floats[0] == 0 and floats[-1] == 255


def _trained_run(tmp_path: Path, cli, *extra: str) -> Path:
    """A tiny run on an 8×8 gray image folder (seconds to train)."""
    data = tmp_path / "data"
    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        for index in range(12):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(data / label / f"{index}.png")
    run = tmp_path / "run"
    code, _, err = cli("train", "--dataset", f"folder:{data}", "--model", "conv-pool", "--model-arg", "channels=4,4",
                       "--epochs", "1", "--batch-size", "8", "--threads", "1", "--no-progress", "--out", run, *extra)
    assert code == 0, err
    return run


def _check_batch_report(corpus, code: int, err: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    for path, want in corpus.items():
        if isinstance(want, str):
            shown = str(path).encode("utf-8", "backslashreplace").decode()  # how a non-UTF-8 name prints
            lines = [line for line in err.splitlines() if shown in line]
            assert len(lines) == 1, (path, err)


def test_denoise_over_a_folder_reports_each_bad_file_and_writes_the_rest(tmp_path: Path, corpus, cli) -> None:
    run = _trained_run(tmp_path, cli, "--task", "denoise")
    folder = next(iter(corpus)).parent
    out = tmp_path / "out"
    code, _, err = cli("denoise", run, folder, "--out", out, "--device", "cpu")
    _check_batch_report(corpus, code, err)
    written = {p.stem for p in out.rglob("*.png")}
    good = {Path(p).stem for p, want in corpus.items() if isinstance(want, tuple)}
    assert good <= written


def test_detect_over_a_folder_reports_each_bad_file_and_scores_the_rest(tmp_path: Path, corpus, cli) -> None:
    run = _trained_run(tmp_path, cli)
    folder = next(iter(corpus)).parent
    csv = tmp_path / "scores.csv"
    code, _, err = cli("detect", run, folder, "--threshold", "0.5", "--csv", csv, "--device", "cpu")
    _check_batch_report(corpus, code, err)
    scored = csv.read_bytes()
    for path, want in corpus.items():
        if isinstance(want, tuple):
            assert os.fsencode(path.name) in scored, path  # the file's own name, bytes and all


# ----------------------------------------------------------------------------- the folder dataset


def test_folder_dataset_skips_each_bad_file_with_one_warning_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "set"
    expected = _write_corpus(root / "mixed")
    (root / "clean").mkdir()
    for index in range(3):
        (root / "clean" / f"{index}.png").write_bytes(_png_bytes(_gradient("RGB")))
    (root / "mixed" / "sub").mkdir()
    (root / "mixed" / "sub" / "up").symlink_to("..")  # a folder symlink loop
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = load_dataset(f"folder:{root}", "train", image_size=(6, 8))
        test = load_dataset(f"folder:{root}", "test", image_size=(6, 8))
    messages = [str(w.message) for w in caught]
    bad = [p for p, want in expected.items() if isinstance(want, str)]
    good = [p for p, want in expected.items() if isinstance(want, tuple)]
    for path in bad:
        assert sum(path.name in m for m in messages) == 1, (path, messages)
    assert len(train) + len(test) == len(good) + 3  # every good file once, none from the loop twice
    assert train.images.dtype == torch.uint8 and train.shape == (3, 6, 8)


def test_folder_dataset_errors_are_one_line_and_exit_2(tmp_path: Path, cli) -> None:
    root = tmp_path / "set"
    (root / "empty_class").mkdir(parents=True)
    (root / "full").mkdir()
    (root / "full" / "a.png").write_bytes(_png_bytes(_gradient()))
    code, _, err = cli("train", "--dataset", f"folder:{root}", "--epochs", "1", "--out", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {root / 'empty_class'}: empty class folder")
    only_bad = tmp_path / "bad"
    (only_bad / "x").mkdir(parents=True)
    (only_bad / "x" / "text.png").write_bytes(b"not an image")
    (only_bad / "x" / "zero.png").write_bytes(b"")
    code, _, err = cli("train", "--dataset", f"folder:{only_bad}", "--epochs", "1", "--out", tmp_path / "run")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ") and str(only_bad) in err.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- IDX


def _idx(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = 0x800 | array.ndim if magic is None else magic
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


IMAGES = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
LABELS = np.array([1, 2, 3], dtype=np.uint8)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty", b"", "truncated"),
        ("short_header", _idx(IMAGES)[:6], "truncated"),
        ("header_cut_in_dims", _idx(IMAGES)[:10], "truncated"),
        ("oversized_header", struct.pack(">IIII", 0x803, 2**31, 2**31, 2**31), "limit"),
        ("wrong_magic", _idx(IMAGES, magic=0x12345678), "magic"),
        ("labels_as_images", _idx(LABELS), "magic"),
        ("short_payload", _idx(IMAGES)[:-7], "truncated"),
        ("trailing_bytes", _idx(IMAGES) + b"\0" * 9, "bytes"),
        ("bad_gzip.gz", b"\x1f\x8b\x08\x00garbage", "gzip"),
    ],
)
def test_bad_idx_files_are_one_line_naming_the_file(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError) as caught:
        read_idx_images(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert reason in message, message


def test_idx_count_mismatch_through_the_cli_exits_2_naming_the_file(tmp_path: Path, cli) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("train", "t10k"):
        (raw / f"{stem}-images-idx3-ubyte").write_bytes(_idx(IMAGES))
        (raw / f"{stem}-labels-idx1-ubyte").write_bytes(_idx(LABELS[:2]))  # 3 images, 2 labels
    code, _, err = cli("train", "--dataset", "mnist", "--data-dir", tmp_path, "--epochs", "1", "--out", tmp_path / "r")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert "labels-idx1-ubyte" in err or "images-idx3-ubyte" in err


# ----------------------------------------------------------------------------- hypothesis fuzzing

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check_idx(path: Path, reader, want: np.ndarray | None) -> None:
    try:
        got = reader(path)
    except DataError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error)
        return
    if want is not None:  # accepted: it must be the very data that was written
        assert np.array_equal(got.numpy().reshape(want.shape), want.astype(got.numpy().dtype))


@FUZZ
@given(data=st.binary(max_size=200), gz=st.booleans())
def test_random_bytes_as_idx_never_crash(tmp_path_factory, data: bytes, gz: bool) -> None:
    path = tmp_path_factory.mktemp("fuzz") / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(data) if gz else data)
    _check_idx(path, read_idx_images, None)
    _check_idx(path, read_idx_labels, None)


@FUZZ
@given(cut=st.integers(0, len(_idx(IMAGES))), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), max_size=3))
def test_damaged_idx_is_refused_or_read_exactly(tmp_path_factory, cut: int, flips) -> None:
    data = bytearray(_idx(IMAGES)[:cut])
    for position, bit in flips:
        if data:
            data[position % len(data)] ^= 1 << bit
    path = tmp_path_factory.mktemp("fuzz") / "images"
    path.write_bytes(bytes(data))
    # Undamaged header and length: the payload must come back byte for byte.
    header_ok = bytes(data[:16]) == _idx(IMAGES)[:16] and len(data) == len(_idx(IMAGES))
    _check_idx(path, read_idx_images, np.frombuffer(bytes(data[16:]), np.uint8).reshape(IMAGES.shape) if header_ok else None)


_VALID_IMAGES = [_png_bytes(_gradient()), _png_bytes(_gradient("RGBA"))]


@FUZZ
@given(which=st.integers(0, 1), cut=st.integers(0, 400), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), max_size=2))
def test_damaged_images_are_refused_or_decoded(tmp_path_factory, which: int, cut: int, flips) -> None:
    data = bytearray(_VALID_IMAGES[which][:cut])
    for position, bit in flips:
        if data:
            data[position % len(data)] ^= 1 << bit
    path = tmp_path_factory.mktemp("fuzz") / "image.png"
    path.write_bytes(bytes(data))
    try:
        image = read_image(path)
    except DataError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error)
        return
    assert image.dtype == torch.uint8 and image.shape[0] in (1, 3) and image.numel() > 0


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".png", ".jpg", ".jpeg", ".bmp"]))
def test_random_bytes_with_an_image_extension_never_crash(tmp_path_factory, data: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"file{suffix}"
    path.write_bytes(data)
    try:
        read_image(path)
    except DataError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error)


# ----------------------------------------------------------------------------- NaN inputs


def test_float_inputs_are_rejected_at_load_time(tmp_path: Path) -> None:
    """Pixels are uint8 everywhere, so NaN can only come from float sources: refuse them there."""
    from convae.data import ImageSet

    images = torch.full((2, 1, 4, 4), 0.5)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="images must be uint8, got torch.float32"):
        ImageSet(images, torch.zeros(2, dtype=torch.int64), ["a"], split="train", name="floats")
    path = tmp_path / "scan.png"  # a float TIFF behind an image extension: Pillow opens it anyway
    path.write_bytes(_float_tiff(np.array([[0.0, np.nan], [0.5, 1.0]])))
    with pytest.raises(DataError, match=r"scan\.png: not a readable image \(1 pixel\(s\) are NaN or Inf\)"):
        read_image(path)
    folder = tmp_path / "set" / "c"
    folder.mkdir(parents=True)
    path.rename(folder / "scan.png")
    for index in range(9):
        (folder / f"ok{index}.png").write_bytes(_png_bytes(_gradient()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sizes = [len(load_dataset(f"folder:{tmp_path / 'set'}", split)) for split in ("train", "test")]
    assert sum(sizes) == 9  # the ok files, not scan.png
    assert [str(w.message) for w in caught if "scan.png" in str(w.message)] == [
        f"{folder / 'scan.png'}: skipped, not a usable image (1 pixel(s) are NaN or Inf)"
    ]
