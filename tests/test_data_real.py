"""Checks against the real MNIST, Fashion-MNIST and CIFAR-10 files, when they are on disk.

Data is found through ``$CONVAE_DATA`` or the ``shared/data`` folder next to the repository;
each test skips with a reason when its dataset is absent. Nothing is written into the data
folder; the decoded-folder cache goes to a temporary folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from conftest import real_data_root

from convae.data import Batches, default_dataset, load_dataset, load_splits

ROOT = real_data_root(need=None)


def _need(*parts: str) -> Path:
    if ROOT is None:
        pytest.skip("no real data: set $CONVAE_DATA or provide ../shared/data beside the repo")
    path = ROOT.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not there")
    return path


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CONVAE_CACHE", str(tmp_path_factory.mktemp("convae-cache")))


# Published per-class counts of MNIST (train and test).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_full():
    _need("MNIST", "raw", "train-images-idx3-ubyte.gz")
    tr, te = load_splits("mnist", data_dir=ROOT, download=False)
    assert tr.images.shape == (60000, 1, 28, 28) and te.images.shape == (10000, 1, 28, 28)
    assert tr.labels.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert te.labels.bincount().tolist() == MNIST_TEST_COUNTS
    # well-known statistic: mean pixel of the training set is 0.1307 (std 0.3081)
    x = tr.images.float() / 255
    assert abs(float(x.mean()) - 0.1307) < 5e-4 and abs(float(x.std()) - 0.3081) < 5e-4
    assert default_dataset(ROOT) == "mnist"


def test_fashion_mnist_full():
    _need("FashionMNIST", "raw", "train-images-idx3-ubyte.gz")
    tr, te = load_splits("fashion-mnist", data_dir=ROOT, download=False)
    assert tr.images.shape == (60000, 1, 28, 28) and te.images.shape == (10000, 1, 28, 28)
    assert tr.labels.bincount().tolist() == [6000] * 10
    assert te.labels.bincount().tolist() == [1000] * 10
    assert abs(float(tr.images.float().mean() / 255) - 0.2860) < 5e-4
    assert tr.classes[0] == "T-shirt/top"


@pytest.mark.slow
def test_cifar10_png(capsys):
    _need("CIFAR10-png", "train")
    t0 = time.perf_counter()
    tr = load_dataset("cifar10", "train", data_dir=ROOT, download=False)
    t1 = time.perf_counter()
    again = load_dataset("cifar10", "train", data_dir=ROOT, download=False)
    t2 = time.perf_counter()
    te = load_dataset("cifar10", "test", data_dir=ROOT, download=False)
    with capsys.disabled():
        print(f"\nCIFAR10-png train: first load {t1 - t0:.1f} s, cached load {t2 - t1:.2f} s")
    assert tr.images.shape == (50000, 3, 32, 32) and te.images.shape == (10000, 3, 32, 32)
    assert tr.labels.bincount().tolist() == [5000] * 10
    assert te.labels.bincount().tolist() == [1000] * 10
    assert tr.classes[0] == "airplane" and tr.classes[9] == "truck"
    mean = (tr.images.double().mean(dim=(0, 2, 3)) / 255).tolist()
    assert [round(m, 3) for m in mean] == [0.491, 0.482, 0.447]  # published 0.4914 0.4822 0.4465
    assert all(abs(m - p) < 5e-4 for m, p in zip(mean, (0.4914, 0.4822, 0.4465)))
    assert torch.equal(again.images, tr.images) and again.ids == tr.ids
    assert t2 - t1 < 5, "cached load should take well under 5 s"
    # spot checks from the data README (batch layout: R plane first, B plane last)
    k = tr.ids.index("train/frog/leptodactylus_pentadactylus_s_000004.png")
    assert tr.images[k, 0, 0, :3].tolist() == [59, 43, 50]
    assert tr.images[k, 2, -1, -3:].tolist() == [140, 84, 72]
    k = tr.ids.index("train/truck/camion_s_000148.png")
    assert tr.images[k, 0, 0, :3].tolist() == [154, 126, 105]
    assert tr.images[k, 2, -1, -3:].tolist() == [139, 142, 144]


def test_mnist_batches_epoch():
    _need("MNIST", "raw", "t10k-images-idx3-ubyte.gz")
    te = load_dataset("mnist", "test", data_dir=ROOT, download=False)
    b = Batches(te.images, 1000, shuffle=True, seed=0, labels=te.labels)
    ys = torch.cat([y for _, y in b])
    assert len(b) == 10 and ys.bincount().tolist() == MNIST_TEST_COUNTS
