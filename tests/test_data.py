"""Tests for convae.data, on tiny files written in the real formats into tmp_path."""

from __future__ import annotations

import gzip
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import convae.data.folder_decode as folder_decode
import convae.data.sources as sources
from convae.core.decode import BadImage, decode_image
from convae.core.errors import ConvaeError, DataError
from convae.data import (
    Batches,
    DataWarning,
    ImageSet,
    dataset_names,
    default_dataset,
    load_dataset,
    load_folder,
    load_splits,
)
from convae.data.batches import epoch_permutation
from convae.data.convert import convert_images, resize_images, rgb_to_gray, to_channels
from convae.data.idx import read_idx_images, read_idx_labels


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Never read the user's data or write into ~/.cache from these tests."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("CONVAE_CACHE", raising=False)
    monkeypatch.delenv("CONVAE_DATA", raising=False)
    return cache


# --------------------------------------------------------------------------- file writers


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | arr.ndim
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = True, magic: int | None = None) -> Path:
    data = idx_bytes(arr, magic)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_idx_dataset(root: Path, folder: str = "MNIST", n_train: int = 20, n_test: int = 10,
                     splits: tuple[str, ...] = ("train", "test"), seed: int = 0) -> dict:
    """Write <root>/<folder>/raw/{train,t10k}-{images,labels}-*.gz with random content."""
    rng = np.random.default_rng(seed)
    out = {}
    raw = root / folder / "raw"
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        if split not in splits:
            continue
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", y)
        out[split] = (x, y)
    return out


def save_png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def rand_img(rng: np.random.Generator, h: int = 8, w: int = 8, c: int = 3) -> np.ndarray:
    shape = (h, w, c) if c == 3 else (h, w)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def make_class_tree(root: Path, classes: dict[str, int], rng, c: int = 3, size=(8, 8)) -> dict:
    """root/<class>/img_XX.png; returns {relative path: array}."""
    arrays = {}
    for cls, n in classes.items():
        for i in range(n):
            a = rand_img(rng, *size, c=c)
            p = save_png(root / cls / f"img_{i:03d}.png", a)
            arrays[p.relative_to(root).as_posix()] = a
    return arrays


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg, f"message is not one line: {msg!r}"
    return msg


# --------------------------------------------------------------------------- IDX parsing


def test_idx_roundtrip_gz_and_raw(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    y = np.array([0, 9, 3, 3, 1], dtype=np.uint8)
    for gz in (True, False):
        xi = read_idx_images(write_idx(tmp_path / f"x{gz}", x, gz=gz))
        yi = read_idx_labels(write_idx(tmp_path / f"y{gz}", y, gz=gz))
        assert xi.dtype == torch.uint8 and xi.shape == (5, 1, 7, 3)
        assert torch.equal(xi[:, 0], torch.from_numpy(x))
        assert yi.dtype == torch.int64 and yi.tolist() == [0, 9, 3, 3, 1]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), h=st.integers(1, 6), w=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_idx_roundtrip_property(tmp_path_factory, n, h, w, seed):
    x = np.random.default_rng(seed).integers(0, 256, size=(n, h, w), dtype=np.uint8)
    p = write_idx(tmp_path_factory.mktemp("idx") / "x.gz", x)
    assert np.array_equal(read_idx_images(p).numpy()[:, 0], x)


def test_idx_wrong_magic(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(b"\0" * 64))
    with pytest.raises(DataError) as e:
        read_idx_images(p)
    msg = one_line(e.value)
    assert str(p) in msg
    assert "wrong magic number 0x00000000 (expected 0x00000803" in msg


def test_idx_labels_file_given_as_images(tmp_path):
    p = write_idx(tmp_path / "labels.gz", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="0x00000801.*expected 0x00000803.*1-D uint8"):
        read_idx_images(p)


def test_idx_truncated_payload(tmp_path):
    data = struct.pack(">IIII", 0x803, 60000, 28, 28) + b"\x01" * 123
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(data))
    with pytest.raises(DataError) as e:
        read_idx_images(p)
    msg = one_line(e.value)
    assert msg == f"{p}: truncated: header says 60000×28×28 = 47040000 bytes, file has 123"


def test_idx_truncated_header(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(struct.pack(">II", 0x803, 5))
    with pytest.raises(DataError, match="truncated"):
        read_idx_images(p)


def test_idx_oversized_header(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(struct.pack(">IIII", 0x803, 4_000_000_000, 100, 100)))
    t = time.perf_counter()
    with pytest.raises(DataError) as e:
        read_idx_images(p)
    assert time.perf_counter() - t < 1.0
    msg = one_line(e.value)
    assert str(p) in msg and "limit" in msg


def test_idx_zero_dims(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(struct.pack(">IIII", 0x803, 0, 28, 28))
    with pytest.raises(DataError, match="empty"):
        read_idx_images(p)


def test_idx_trailing_data(tmp_path):
    p = tmp_path / "y"
    p.write_bytes(idx_bytes(np.arange(3, dtype=np.uint8)) + b"junk")
    with pytest.raises(DataError, match=r"trailing data"):
        read_idx_labels(p)


def test_idx_corrupt_gzip(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(b"\x1f\x8b" + b"this is not deflate data at all" * 3)
    with pytest.raises(DataError) as e:
        read_idx_images(p)
    assert str(p) in one_line(e.value)


def test_idx_cut_gzip(tmp_path):
    full = gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)))
    p = tmp_path / "x.gz"
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError) as e:
        read_idx_images(p)
    msg = one_line(e.value)
    assert str(p) in msg and ("gzip" in msg or "truncated" in msg)


@pytest.mark.parametrize("content", [None, b""])
def test_idx_missing_or_empty(tmp_path, content):
    p = tmp_path / "x.gz"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_idx_labels(p)
    assert str(p) in one_line(e.value)


def test_idx_directory(tmp_path):
    with pytest.raises(DataError, match="directory"):
        read_idx_labels(tmp_path)


# --------------------------------------------------------------------------- ImageSet


def test_imageset_basics():
    imgs = torch.arange(6 * 3 * 2 * 2, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(6, 3, 2, 2)
    s = ImageSet(imgs, torch.tensor([0, 1, 2, 0, 1, 2]), ["a", "b", "c"], "train", "t")
    assert len(s) == 6 and s.shape == (3, 2, 2)
    sub = s.subset([4, 0])
    assert len(sub) == 2 and torch.equal(sub.images[0], imgs[4]) and sub.labels.tolist() == [1, 0]
    assert s.subset(s.labels == 1).labels.tolist() == [1, 1]
    assert len(s.subset([])) == 0
    sel = s.select_classes([2, 0])
    assert sel.labels.tolist() == [0, 2, 0, 2]
    assert sel.classes == ["a", "b", "c"]
    with pytest.raises(DataError):
        s.select_classes([3])
    with pytest.raises(DataError):
        s.subset([6])


def test_imageset_validation():
    good = torch.zeros(2, 1, 3, 3, dtype=torch.uint8)
    with pytest.raises(DataError, match="uint8"):
        ImageSet(good.float(), torch.zeros(2), ["a"], "train", "t")
    with pytest.raises(DataError, match="4-D"):
        ImageSet(good[0], torch.zeros(1), ["a"], "train", "t")
    with pytest.raises(DataError, match="2 images but 3 labels"):
        ImageSet(good, torch.zeros(3), ["a"], "train", "t")
    with pytest.raises(DataError, match="label 5 out of range"):
        ImageSet(good, torch.tensor([0, 5]), ["a"], "train", "t")
    s = ImageSet(good.permute(0, 1, 3, 2), torch.tensor([-1, 0]), ["a"], "train", "t")
    assert s.images.is_contiguous() and s.labels.dtype == torch.int64


# --------------------------------------------------------------------------- conversion


def test_rgb_to_gray_matches_pillow():
    rng = np.random.default_rng(3)
    a = rand_img(rng, 16, 16, 3)
    ours = rgb_to_gray(torch.from_numpy(a).permute(2, 0, 1)[None])[0, 0].numpy()
    pil = np.asarray(Image.fromarray(a).convert("L"))
    assert np.array_equal(ours, pil)


def test_to_channels_and_resize():
    x = torch.randint(0, 256, (2, 1, 10, 12), dtype=torch.uint8)
    x3 = to_channels(x, 3)
    assert x3.shape == (2, 3, 10, 12) and x3.is_contiguous()
    assert torch.equal(x3[:, 2], x[:, 0])
    assert torch.equal(to_channels(x3, 1), x)  # gray→RGB→gray is lossless
    r = resize_images(x, (5, 6))
    assert r.shape == (2, 1, 5, 6) and r.dtype == torch.uint8
    flat = torch.full((1, 3, 8, 8), 77, dtype=torch.uint8)
    assert torch.equal(convert_images(flat, 1, (4, 4)), torch.full((1, 1, 4, 4), 77, dtype=torch.uint8))
    with pytest.raises(DataError, match="channels"):
        to_channels(x, 2)
    with pytest.raises(DataError, match="image_size"):
        resize_images(x, (0, 4))
    with pytest.raises(DataError, match="image_size"):
        resize_images(x, "big")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- IDX datasets


def test_load_mnist_from_data_dir(tmp_path):
    truth = make_idx_dataset(tmp_path)
    tr, te = load_splits("mnist", data_dir=tmp_path, download=False)
    assert (tr.name, tr.split, te.split) == ("mnist", "train", "test")
    assert tr.classes == [str(i) for i in range(10)]
    assert tr.images.shape == (20, 1, 28, 28) and te.images.shape == (10, 1, 28, 28)
    assert np.array_equal(tr.images[:, 0].numpy(), truth["train"][0])
    assert tr.labels.tolist() == truth["train"][1].tolist()


def test_search_order_and_env(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    make_idx_dataset(a, n_train=3, seed=1)
    make_idx_dataset(b, n_train=5, seed=2)
    monkeypatch.setenv("CONVAE_DATA", str(b))
    assert len(load_dataset("mnist", data_dir=a, download=False)) == 3  # data_dir first
    assert len(load_dataset("mnist", download=False)) == 5  # then $CONVAE_DATA
    # the root may also be the MNIST folder itself or its raw/ folder
    assert len(load_dataset("mnist", data_dir=a / "MNIST", download=False)) == 3
    assert len(load_dataset("mnist", data_dir=a / "MNIST" / "raw", download=False)) == 3


def test_fashion_and_conversion(tmp_path):
    make_idx_dataset(tmp_path, folder="FashionMNIST")
    s = load_dataset("fashion-mnist", "test", data_dir=tmp_path, channels=3, image_size=(32, 30),
                     download=False)
    assert s.name == "fashion-mnist" and s.classes[0] == "T-shirt/top" and s.classes[9] == "Ankle boot"
    assert s.images.shape == (10, 3, 32, 30)
    # MNIST files are not Fashion-MNIST files, even though their names are the same
    with pytest.raises(DataError, match="mnist not found on disk"):
        load_dataset("mnist", data_dir=tmp_path / "FashionMNIST" / "raw", download=False)


def test_default_dataset(tmp_path, monkeypatch):
    assert default_dataset(tmp_path) == "mnist-sample"
    make_idx_dataset(tmp_path, splits=("train",))
    assert default_dataset(tmp_path) == "mnist-sample"  # test split missing
    make_idx_dataset(tmp_path)
    assert default_dataset(tmp_path) == "mnist"
    monkeypatch.setenv("CONVAE_DATA", str(tmp_path))
    assert default_dataset() == "mnist"


def test_label_count_mismatch_names_file(tmp_path):
    make_idx_dataset(tmp_path)
    lab = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    write_idx(lab, np.zeros(7, np.uint8))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert str(lab) in one_line(e.value) and "7 labels" in str(e.value)


def test_label_out_of_range(tmp_path):
    make_idx_dataset(tmp_path)
    lab = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    write_idx(lab, np.full(10, 12, np.uint8))
    with pytest.raises(DataError, match="label 12"):
        load_dataset("mnist", "test", data_dir=tmp_path, download=False)


def test_corrupt_file_through_load_dataset(tmp_path):
    make_idx_dataset(tmp_path)
    img = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    img.write_bytes(gzip.compress(b"\0" * 100))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert str(img) in one_line(e.value)


def test_spec_errors(tmp_path):
    assert dataset_names() == ["mnist", "fashion-mnist", "cifar10", "mnist-sample"]
    with pytest.raises(DataError, match="unknown name 'imagenet'.*mnist.*folder:PATH"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match=f"folder:{tmp_path}"):
        load_dataset(str(tmp_path))
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_dataset("mnist-sample", "val")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "nope")
    with pytest.raises(DataError, match="channels"):
        load_dataset("mnist-sample", channels=4)
    assert issubclass(DataError, ConvaeError)


def test_not_found_without_download(tmp_path, _isolated_env):
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    msg = one_line(e.value)
    assert str(tmp_path) in msg and str(_isolated_env / "convae") in msg
    assert "$CONVAE_DATA" in msg


# --------------------------------------------------------------------------- downloads (offline)


def test_offline_download_fails_fast(tmp_path, monkeypatch, _isolated_env):
    """The real code path with the real mirror list: this machine has no network."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("CONVAE_DATA", str(data))
    # If the machine is online after all, never download for real from a test.
    import torchvision.datasets as tvd

    def no_real_download(*a, **k):
        raise RuntimeError("simulated: download not allowed in tests")

    monkeypatch.setattr(tvd.MNIST, "download", no_real_download)
    t = time.perf_counter()
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    elapsed = time.perf_counter() - t
    msg = one_line(e.value)
    assert elapsed < 10, f"offline failure took {elapsed:.1f} s"
    assert msg.startswith("mnist not found on disk (looked in: ")
    for root in (tmp_path, data, _isolated_env / "convae"):
        assert str(root) in msg
    assert "download failed" in msg and "--data-dir" in msg


def test_unreachable_host_fails_fast(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.FashionMNIST, "mirrors", ["https://convae-test.invalid/"])
    with pytest.raises(DataError, match=r"fashion-mnist not found on disk .*convae-test\.invalid"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_hanging_network_is_cut_off(tmp_path, monkeypatch):
    """A connect (or DNS lookup) that never answers must not hang the loader."""
    called = []

    def hang(*a, **k):
        time.sleep(30)

    def fake_cls(*a, **k):  # pragma: no cover - must not be reached
        called.append(1)

    monkeypatch.setattr(sources.socket, "create_connection", hang)
    monkeypatch.setattr(sources, "CONNECT_TIMEOUT_S", 0.3)
    t = time.perf_counter()
    with pytest.raises(DataError, match="no answer from"):
        sources._download("mnist", type("X", (), {"url": "https://example.org/x", "__call__": fake_cls}),
                          [tmp_path], "fix it")
    assert time.perf_counter() - t < 5 and not called


def test_download_exception_is_wrapped(tmp_path, monkeypatch):
    """A failure inside torchvision's download becomes one DataError line."""
    import torchvision.datasets as tvd

    monkeypatch.setattr(sources, "_probe", lambda url, timeout=0: None)

    def boom(self, *a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x, got:\nHTTP 503")

    monkeypatch.setattr(tvd.MNIST, "__init__", boom)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    assert "HTTP 503" in one_line(e.value)


# --------------------------------------------------------------------------- mnist-sample


def test_mnist_sample():
    tr, te = load_splits("mnist-sample")
    assert (len(tr), len(te)) == (4000, 1000)
    assert tr.shape == te.shape == (1, 28, 28)
    assert tr.images.dtype == torch.uint8 and int(tr.images.max()) == 255
    assert sorted(set(tr.labels.tolist())) == list(range(10))
    assert sorted(set(te.labels.tolist())) == list(range(10))
    assert tr.name == "mnist-sample" and tr.classes == [str(i) for i in range(10)]
    again = load_dataset("mnist-sample", "train")
    assert torch.equal(again.images, tr.images) and torch.equal(again.labels, tr.labels)
    # the split is a permutation: the first training labels are not the sorted source order
    assert len(set(tr.labels[:50].tolist())) > 3
    rgb = load_dataset("mnist-sample", "test", channels=3, image_size=(32, 32))
    assert rgb.images.shape == (1000, 3, 32, 32)


# --------------------------------------------------------------------------- folders


def test_folder_split_layout(tmp_path):
    rng = np.random.default_rng(0)
    arrays = make_class_tree(tmp_path / "train", {"cat": 3, "dog": 2, "emu": 1}, rng)
    make_class_tree(tmp_path / "test", {"cat": 1, "emu": 2}, rng)  # no dog in test
    tr = load_folder(tmp_path, "train")
    te = load_folder(tmp_path, "test")
    assert tr.classes == te.classes == ["cat", "dog", "emu"]
    assert tr.labels.tolist() == [0, 0, 0, 1, 1, 2]
    assert te.labels.tolist() == [0, 2, 2]  # emu keeps label 2 although dog is absent
    assert tr.ids[0] == "train/cat/img_000.png"
    for i, rid in enumerate(tr.ids):
        assert np.array_equal(tr.images[i].permute(1, 2, 0).numpy(), arrays[rid[len("train/"):]])
    assert tr.shape == (3, 8, 8) and tr.split == "train"
    with pytest.raises(DataError, match="no 'val' folder"):
        load_folder(tmp_path, "val")


def test_folder_holdout_layout(tmp_path):
    rng = np.random.default_rng(0)
    make_class_tree(tmp_path, {"a": 20, "b": 5, "c": 1}, rng, c=1)
    tr = load_folder(tmp_path, "train")
    te = load_folder(tmp_path, "test")
    assert tr.shape == (1, 8, 8)
    counts_te = te.labels.bincount(minlength=3).tolist()
    counts_tr = tr.labels.bincount(minlength=3).tolist()
    assert counts_te == [2, 1, 0] and counts_tr == [18, 4, 1]
    assert not set(tr.ids) & set(te.ids)
    assert len(set(tr.ids) | set(te.ids)) == 26
    assert load_folder(tmp_path, "test").ids == te.ids  # deterministic
    with pytest.raises(DataError, match="use split 'train' or 'test'"):
        load_folder(tmp_path, "val")


def test_folder_flat_layout(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "pets"
    for i in range(10):
        save_png(root / f"{i}.png", rand_img(rng, 6, 5, 1))
    (root / "notes.txt").write_text("not an image, ignored by extension")
    tr = load_folder(root, "train")
    te = load_folder(root, "test")
    assert tr.classes == ["pets"] and set(tr.labels.tolist()) == {0}
    assert (len(tr), len(te)) == (9, 1) and tr.shape == (1, 6, 5)


def test_folder_spec_and_nested(tmp_path):
    rng = np.random.default_rng(0)
    save_png(tmp_path / "train" / "x" / "deep" / "er" / "a.PNG", rand_img(rng))
    save_png(tmp_path / "train" / "x" / ".hidden.png", rand_img(rng))
    s = load_dataset(f"folder:{tmp_path}")
    assert s.name == f"folder:{tmp_path}" and s.ids == ["train/x/deep/er/a.PNG"]


def test_folder_channel_modes(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "modes"
    d = root / "train" / "all"
    d.mkdir(parents=True)
    rgb = rand_img(rng, 4, 4, 3)
    gray = rand_img(rng, 4, 4, 1)
    Image.fromarray(rgb).save(d / "a_rgb.png")
    Image.fromarray(gray).save(d / "b_gray.png")
    Image.fromarray(np.dstack([rgb, np.full((4, 4), 7, np.uint8)])).save(d / "c_rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(d / "d_pal.png")
    Image.merge("LA", [Image.fromarray(gray), Image.fromarray(gray)]).save(d / "e_la.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "f_cmyk.jpg", quality=100)
    Image.fromarray(gray.astype(np.uint16) * 257).save(d / "g_16.png")
    Image.fromarray(rgb).save(d / "h.bmp")

    s = load_folder(root, "train")
    assert len(s) == 8 and s.shape == (3, 4, 4)  # auto: a colour image is present → 3 channels
    by = {i.split("/")[-1]: s.images[k].permute(1, 2, 0).numpy() for k, i in enumerate(s.ids)}
    assert np.array_equal(by["a_rgb.png"], rgb)
    assert np.array_equal(by["b_gray.png"], np.dstack([gray] * 3))  # gray replicated
    assert np.array_equal(by["c_rgba.png"], rgb)  # alpha dropped
    assert np.array_equal(by["d_pal.png"], np.asarray(Image.open(d / "d_pal.png").convert("RGB")))
    assert np.array_equal(by["e_la.png"], np.dstack([gray] * 3))
    assert np.array_equal(by["g_16.png"], np.dstack([gray] * 3))  # 16-bit scaled to 8 bits
    assert np.array_equal(by["h.bmp"], rgb)
    assert by["f_cmyk.jpg"].shape == (4, 4, 3)

    g = load_folder(root, "train", channels=1)
    assert g.shape == (1, 4, 4)
    k = g.ids.index("train/all/a_rgb.png")
    assert np.array_equal(g.images[k, 0].numpy(), np.asarray(Image.fromarray(rgb).convert("L")))
    k = g.ids.index("train/all/b_gray.png")
    assert np.array_equal(g.images[k, 0].numpy(), gray)


def test_decode_sixteen_bit_and_gray_palette(tmp_path):
    p = tmp_path / "16.png"
    Image.fromarray(np.array([[0, 65535], [257, 32896]], dtype=np.uint16)).save(p)
    arr, colour = decode_image(p)
    assert not colour and arr.tolist() == [[0, 255], [1, 128]]
    g = Image.fromarray(np.array([[0, 50], [100, 200]], dtype=np.uint8)).convert("P")
    g.save(tmp_path / "gp.png")
    arr, colour = decode_image(tmp_path / "gp.png")
    assert not colour and arr.tolist() == [[0, 50], [100, 200]]


def test_folder_gray_only_is_one_channel_and_resize(tmp_path):
    rng = np.random.default_rng(0)
    make_class_tree(tmp_path / "train", {"a": 2}, rng, c=1, size=(6, 6))
    s = load_folder(tmp_path, "train", image_size=(3, 4))
    assert s.shape == (1, 3, 4)
    s3 = load_folder(tmp_path, "train", channels=3)
    assert s3.shape == (3, 6, 6)


def test_folder_mixed_sizes(tmp_path):
    rng = np.random.default_rng(0)
    save_png(tmp_path / "train" / "a" / "1.png", rand_img(rng, 8, 8))
    odd = save_png(tmp_path / "train" / "a" / "2.png", rand_img(rng, 9, 7))
    save_png(tmp_path / "train" / "b" / "3.png", rand_img(rng, 8, 8, c=1))
    with pytest.raises(DataError) as e:
        load_folder(tmp_path, "train")
    msg = one_line(e.value)
    assert msg.startswith(str(odd)) and "9×7 pixels (H×W)" in msg and "--image-size 8x8" in msg
    s = load_folder(tmp_path, "train", image_size=(5, 5))
    assert s.images.shape == (3, 3, 5, 5)
    assert s.labels.tolist() == [0, 0, 1]


def test_folder_bad_files_are_skipped_with_warnings(tmp_path):
    rng = np.random.default_rng(0)
    make_class_tree(tmp_path / "train", {"a": 2, "b": 2}, rng)
    zero = tmp_path / "train" / "a" / "zero.png"
    zero.write_bytes(b"")
    text = tmp_path / "train" / "b" / "text.jpg"
    text.write_text("hello, I am not a JPEG")
    good = save_png(tmp_path / "x.png", rand_img(rng, 8, 8))
    cut = tmp_path / "train" / "b" / "cut.png"
    cut.write_bytes(good.read_bytes()[:60])
    with pytest.warns(DataWarning) as rec:
        s = load_folder(tmp_path, "train")
    assert len(s) == 4
    messages = [str(w.message) for w in rec]
    for bad in (zero, text, cut):
        assert any(m.startswith(str(bad)) for m in messages), (bad, messages)
    assert any("0 bytes" in m for m in messages)
    assert not any(str(bad) in m[len(str(bad)):] for m in messages for bad in (text,)), messages
    # the cache remembers the skipped files and warns again
    with pytest.warns(DataWarning) as rec:
        again = load_folder(tmp_path, "train")
    assert torch.equal(again.images, s.images)
    assert sorted(str(w.message).split(":")[0] for w in rec) == sorted(str(b) for b in (zero, text, cut))


def test_folder_class_with_only_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    make_class_tree(tmp_path / "train", {"a": 2}, rng)
    (tmp_path / "train" / "cat").mkdir()
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.warns(DataWarning), pytest.raises(DataError) as e:
        load_folder(tmp_path, "train")
    assert one_line(e.value).startswith(str(tmp_path / "train" / "cat") + ":")


def test_folder_empty_class_folder(tmp_path):
    rng = np.random.default_rng(0)
    make_class_tree(tmp_path / "train", {"a": 2}, rng)
    (tmp_path / "train" / "cat").mkdir()
    (tmp_path / "train" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(DataError) as e:
        load_folder(tmp_path, "train")
    assert one_line(e.value).startswith(f"{tmp_path / 'train' / 'cat'}: empty class folder")


def test_folder_nothing_usable(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"nope")
    with pytest.warns(DataWarning), pytest.raises(DataError, match="none of the"):
        load_folder(tmp_path, "train")
    with pytest.raises(DataError, match="no such folder"):
        load_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="not a folder"):
        load_folder(tmp_path / "a.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_folder(empty)


def test_folder_decompression_bomb_is_skipped(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    save_png(tmp_path / "train" / "a" / "small.png", rand_img(rng, 4, 4))
    # A real image beyond the default 50-megapixel cap: 8000×7000 black compresses to ~60 kB.
    big = tmp_path / "train" / "a" / "big.png"
    Image.new("L", (8000, 7000)).save(big)
    with pytest.raises(BadImage, match="pixel limit"):
        decode_image(big)
    with pytest.warns(DataWarning, match="big.png.*pixel limit"):
        s = load_folder(tmp_path, "train")
    assert s.ids == ["train/a/small.png"]


def test_folder_cache_hit_skips_decoding(tmp_path, _isolated_env, monkeypatch):
    rng = np.random.default_rng(0)
    make_class_tree(tmp_path / "d" / "train", {"a": 3, "b": 2}, rng)
    first = load_folder(tmp_path / "d", "train")
    files = list((_isolated_env / "convae" / "folders").glob("*.safetensors"))
    assert len(files) == 1
    from safetensors import safe_open

    with safe_open(str(files[0]), framework="pt") as f:
        assert set(f.keys()) == {"images", "labels"} and "convae" in f.metadata()

    calls = []

    def counting(*a, **k):
        calls.append(a)
        raise AssertionError("decoder called on a cache hit")

    monkeypatch.setattr(folder_decode, "decode_image", counting)
    second = load_folder(tmp_path / "d", "train")
    assert not calls
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.ids == second.ids and first.classes == second.classes

    # touching a file changes the fingerprint: the cache misses and the decoder runs
    p = tmp_path / "d" / "train" / "a" / "img_000.png"
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoder called"):
        load_folder(tmp_path / "d", "train")
    # the edited folder and other options get their own cache entries
    monkeypatch.setattr(folder_decode, "decode_image", decode_image)
    load_folder(tmp_path / "d", "train")
    load_folder(tmp_path / "d", "train", channels=1)
    assert len(list((_isolated_env / "convae" / "folders").glob("*.safetensors"))) == 3


def test_folder_cache_dir_and_env(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    make_class_tree(tmp_path / "d" / "train", {"a": 2}, rng)
    load_folder(tmp_path / "d", "train", cache_dir=tmp_path / "explicit")
    assert list((tmp_path / "explicit" / "folders").glob("*.safetensors"))
    monkeypatch.setenv("CONVAE_CACHE", str(tmp_path / "envcache"))
    load_folder(tmp_path / "d", "train")
    assert list((tmp_path / "envcache" / "folders").glob("*.safetensors"))
    assert not list((tmp_path / "envcache" / "folders").glob("*.tmp"))


def test_folder_unwritable_cache_still_loads(tmp_path):
    rng = np.random.default_rng(0)
    make_class_tree(tmp_path / "d" / "train", {"a": 2}, rng)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(DataWarning, match="cannot write"):
        s = load_folder(tmp_path / "d", "train", cache_dir=blocker)
    assert len(s) == 2


def test_folder_corrupt_cache_file_is_a_miss(tmp_path, _isolated_env):
    rng = np.random.default_rng(0)
    make_class_tree(tmp_path / "d" / "train", {"a": 2}, rng)
    first = load_folder(tmp_path / "d", "train")
    (cache_file,) = (_isolated_env / "convae" / "folders").glob("*.safetensors")
    cache_file.write_bytes(b"garbage")
    with pytest.warns(DataWarning, match="unreadable cache"):
        again = load_folder(tmp_path / "d", "train")
    assert torch.equal(first.images, again.images)


def test_cifar10_from_png_folder(tmp_path):
    rng = np.random.default_rng(0)
    classes = sources.CIFAR10_CLASSES
    for split in ("train", "test"):
        make_class_tree(tmp_path / "CIFAR10-png" / split, {c: 1 for c in classes}, rng, size=(32, 32))
    tr = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert tr.name == "cifar10" and tr.classes == classes and tr.labels.tolist() == list(range(10))
    g = load_dataset("cifar10", "test", data_dir=tmp_path, channels=1, image_size=(16, 16))
    assert g.shape == (1, 16, 16)


def test_cifar10_wrong_classes(tmp_path):
    rng = np.random.default_rng(0)
    make_class_tree(tmp_path / "CIFAR10-png" / "train", {"cat": 1, "dog": 1}, rng)
    with pytest.raises(DataError, match="expected the 10 CIFAR-10 classes"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_cifar10_bad_pickled_batches(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"junk")
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert "cifar-10-batches-py" in one_line(e.value)


# --------------------------------------------------------------------------- Batches


def _images(n: int) -> torch.Tensor:
    return torch.arange(n * 4, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(n, 1, 2, 2)


def test_batches_values_and_len():
    x = _images(10)
    b = Batches(x, 4, shuffle=False, seed=0)
    out = list(b)
    assert len(b) == 3 == len(out) and [len(o) for o in out] == [4, 4, 2]
    cat = torch.cat(out)
    assert cat.dtype == torch.float32 and 0.0 <= float(cat.min()) and float(cat.max()) <= 1.0
    assert torch.equal((cat * 255).round().to(torch.uint8), x)
    b2 = Batches(x, 4, shuffle=False, seed=0, drop_last=True)
    assert len(b2) == 2 and [len(o) for o in b2] == [4, 4]
    full = Batches(torch.tensor([[0, 255]], dtype=torch.uint8), 1, shuffle=False, seed=0)
    assert next(iter(full)).tolist() == [[0.0, 1.0]]


def test_batches_order_is_the_documented_permutation():
    n, seed, epoch = 23, 7, 3
    x = _images(n)
    y = torch.arange(n)
    b = Batches(x, 5, shuffle=True, seed=seed, epoch=epoch, labels=y)
    got = torch.cat([yb for _, yb in b])
    expected = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    assert torch.equal(got, expected)
    assert torch.equal(epoch_permutation(n, seed, epoch), expected)
    assert sorted(got.tolist()) == list(range(n))  # every image once
    again = torch.cat([yb for _, yb in b])
    assert torch.equal(got, again)  # iterating twice gives the same epoch
    other = torch.cat([yb for _, yb in Batches(x, 5, shuffle=True, seed=seed, epoch=epoch + 1, labels=y)])
    assert not torch.equal(got, other)
    xs = torch.cat([xb for xb, _ in b])
    assert torch.equal(xs, x.index_select(0, expected).float() / 255)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), bs=st.integers(1, 12), seed=st.integers(0, 10**6),
       epoch=st.integers(0, 50), drop_last=st.booleans(), data=st.data())
def test_batches_start_step_equals_tail(n, bs, seed, epoch, drop_last, data):
    x = _images(n)
    full = list(Batches(x, bs, shuffle=True, seed=seed, epoch=epoch, drop_last=drop_last))
    k = data.draw(st.integers(0, len(full)))
    tail = Batches(x, bs, shuffle=True, seed=seed, epoch=epoch, start_step=k, drop_last=drop_last)
    got = list(tail)
    assert len(tail) == len(full) and tail.remaining == len(got) == len(full) - k
    for a, b in zip(got, full[k:]):
        assert torch.equal(a, b)


def test_batches_set_epoch_and_errors():
    x = _images(8)
    b = Batches(x, 3, shuffle=True, seed=1)
    first = torch.cat(list(b))
    b.set_epoch(1)
    assert not torch.equal(first, torch.cat(list(b)))
    b.set_epoch(0, start_step=2)
    assert len(b) == 3 and b.remaining == 1 and len(list(b)) == 1
    with pytest.raises(DataError, match="start_step"):
        Batches(x, 3, shuffle=True, seed=0, start_step=4)
    with pytest.raises(DataError, match="batch_size"):
        Batches(x, 0, shuffle=True, seed=0)
    with pytest.raises(DataError, match="uint8"):
        Batches(x.float(), 2, shuffle=True, seed=0)
    with pytest.raises(DataError, match="labels"):
        Batches(x, 2, shuffle=True, seed=0, labels=torch.zeros(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_cuda_match_cpu():
    x = torch.randint(0, 256, (37, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(37)
    cpu = list(Batches(x, 8, shuffle=True, seed=3, labels=y))
    gpu = list(Batches(x, 8, shuffle=True, seed=3, labels=y, device="cuda"))
    for (a, ya), (b, yb) in zip(cpu, gpu):
        assert b.device.type == "cuda" and b.dtype == torch.float32
        assert torch.equal(a, b.cpu()) and torch.equal(ya, yb.cpu())


def test_batches_with_imageset_labels():
    s = load_dataset("mnist-sample", "test")
    b = Batches(s.images, 256, shuffle=True, seed=0, labels=s.labels)
    xb, yb = next(iter(b))
    assert xb.shape == (256, 1, 28, 28) and yb.dtype == torch.int64 and len(b) == 4
