"""Inspection datasets in the layout their users already have (MVTec AD, anomalib's Folder):

```
PATH/train/good/*.png                    normal parts to learn from
PATH/test/good/*.png                     normal parts to test on
PATH/test/<defect>/*.png                 defective parts, one folder per defect type
PATH/ground_truth/<defect>/<name>_mask.png   pixel masks of the defects (white = defect)
```

``mvtec:PATH`` loads it; ``folder:PATH`` recognises it (train/good, test/ and
ground_truth/). Images load as a folder dataset whose classes are ``good`` and the defect
types; a run on it trains on ``good`` only. The test split carries the masks
(``ImageSet.masks``), converted to the images' size, so pixel-level metrics compare like
with like. A mask without its image, an image without its mask, or a mask of another size
than its image is a one-line error naming the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from convae.core.errors import DataError
from convae.data.files import read_image
from convae.data.imageset import ImageSet

PREFIX = "mvtec:"
GOOD = "good"
MASKS = "ground_truth"
MASK_SUFFIX = "_mask"


def is_mvtec(root: str | Path) -> bool:
    """True for a folder in the inspection layout: train/good/, test/ and ground_truth/."""
    root = Path(root).expanduser()
    return (root / "train" / GOOD).is_dir() and (root / "test").is_dir() and (root / MASKS).is_dir()


def check_layout(root: Path) -> None:
    """One line for a folder that does not have the layout ``mvtec:`` promises."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder" if not root.exists() else f"{root}: not a folder")
    for needed in (root / "train" / GOOD, root / "test"):
        if not needed.is_dir():
            raise DataError(f"{root}: not an inspection dataset (no {needed.relative_to(root)}/ folder); "
                            f"expected train/good/, test/<type>/ and ground_truth/<defect>/")


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return (image.height, image.width)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable image ({error})") from None


def attach_masks(root: Path, data: ImageSet) -> ImageSet:
    """The test split with its defect masks (uint8 N×H×W, 1 = defect) at the images' size.

    Good images get an empty mask. Without a ground_truth/ folder there are no masks
    (image-level metrics only).
    """
    masks_root = root / MASKS
    if not masks_root.is_dir() or data.ids is None:
        return data
    _, height, width = data.shape
    wanted: dict[Path, int] = {}
    masks = torch.zeros(len(data), height, width, dtype=torch.uint8)
    for index, rel in enumerate(data.ids):
        parts = Path(rel).parts
        if len(parts) < 3 or parts[0] != "test" or parts[1] == GOOD:
            continue
        mask_path = masks_root.joinpath(*parts[1:-1], Path(parts[-1]).stem + MASK_SUFFIX + ".png")
        wanted[mask_path] = index
        if not mask_path.is_file():
            raise DataError(f"{root / rel}: defect image without a mask (expected {mask_path})")
        array = read_image(mask_path).amax(0).numpy()  # any channel lit marks the defect
        image_size = _image_size(root / rel)
        if array.shape != image_size:
            raise DataError(f"{mask_path}: mask is {array.shape[0]}×{array.shape[1]} (H×W) but its image "
                            f"{root / rel} is {image_size[0]}×{image_size[1]}")
        mask = torch.from_numpy((array > 0).astype(np.uint8))
        if data.sizes is not None and mask.shape == data.image_size(index):  # its own size on a larger canvas
            masks[index, : mask.shape[0], : mask.shape[1]] = mask
            continue
        if mask.shape != (height, width):  # the images were resized (--image-size): the masks follow
            mask = F.interpolate(mask[None, None].float(), size=(height, width), mode="nearest")[0, 0].to(torch.uint8)
        masks[index] = mask
    for mask_path in sorted(masks_root.rglob(f"*{MASK_SUFFIX}.png")):
        if mask_path not in wanted:
            image = root / "test" / mask_path.relative_to(masks_root).parent / (mask_path.stem[: -len(MASK_SUFFIX)])
            raise DataError(f"{mask_path}: mask without an image (no {image}.png or other image of that name in "
                            f"{image.parent})")
    return dataclasses.replace(data, masks=masks)
