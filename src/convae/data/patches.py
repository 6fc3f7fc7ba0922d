"""Fixed patch sets for measuring a patch-trained model, and the check that images hold a patch.

Training draws fresh random patches every epoch (:class:`convae.data.batches.Batches` with
``patch``); a loss that is compared from epoch to epoch needs the *same* patches each time,
so validation and test patches are cut once, at places drawn from the run's seed.
"""

from __future__ import annotations

from pathlib import Path

from convae.core.errors import DataError
from convae.data.batches import Batches
from convae.data.imageset import ImageSet

#: At most this many evaluation patches: enough for a stable loss, cheap to score each epoch.
MAX_EVAL_PATCHES = 2048


def image_label(data: ImageSet, index: int) -> str:
    """The file an image came from (folder data), else ``name/split #index``: for messages."""
    if data.ids is not None:
        name = data.name
        root = name.split(":", 1)[1] if ":" in name else name
        return str(Path(root) / data.ids[index])
    return f"{data.name}/{data.split} image #{index}"


def check_patch_fits(data: ImageSet, patch: int) -> None:
    """One line naming the first image smaller than the patch, as the user's files call it."""
    for index in range(len(data)):
        h, w = data.image_size(index)
        if h < patch or w < patch:
            raise DataError(f"{image_label(data, index)}: image is {h}×{w} (H×W), smaller than --patch {patch}; "
                            f"use a smaller --patch or leave this image out")


def patch_set(data: ImageSet, patch: int, seed: int, limit: int = MAX_EVAL_PATCHES) -> ImageSet:
    """The same ``patch``×``patch`` crops of ``data`` every time (places from ``seed``), at most ``limit``."""
    check_patch_fits(data, patch)
    batches = Batches(data.images, limit, shuffle=True, seed=seed, epoch=0, patch=patch, sizes=data.sizes)
    order = batches.order()[:limit].sort().values
    crops = batches.crops(order, batches.places(order, 0))
    labels = data.labels.index_select(0, order)
    ids = [data.ids[i] for i in order.tolist()] if data.ids is not None else None
    return ImageSet(crops.contiguous(), labels, list(data.classes), data.split, data.name, ids=ids)
