"""``--anomaly-source DIR``: the folder of images simulated defects are filled from.

DRAEM fills its defect shapes from the DTD texture set. Here any folder of images serves
(DTD itself, offcuts of the user's own material, photos): every file is read once, fitted
to the parts' channels and size, and kept as uint8 so a large folder costs what its pixels
cost and no more. An unreadable file stops the run before it starts, naming the file,
rather than silently training on fewer textures than the user gave.
"""

from __future__ import annotations

from pathlib import Path

import torch

from convae.core.decode import IMAGE_EXTENSIONS
from convae.core.errors import DataError
from convae.data.convert import convert_images
from convae.data.files import find_image_files, read_image

#: At most this many textures are kept (a seeded choice): enough variety, bounded memory.
MAX_TEXTURES = 2000


def load_anomaly_source(folder: str | Path, channels: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """uint8 N×C×H×W textures from every image below ``folder``, at the parts' channels and H×W."""
    folder = Path(folder)
    where = f"--anomaly-source {folder}"
    if not folder.is_dir():
        raise DataError(f"{where}: {'not a folder' if folder.exists() else 'no such folder'}")
    found = [f for f in find_image_files([folder]) if f.error is None]
    if not found:
        raise DataError(f"{where}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder")
    if len(found) > MAX_TEXTURES:
        keep = torch.randperm(len(found), generator=torch.Generator().manual_seed(seed))[:MAX_TEXTURES]
        found = [found[i] for i in sorted(keep.tolist())]
    textures = []
    for item in found:
        try:
            image = read_image(item.path, notes=[])
        except DataError as error:
            raise DataError(f"{where}: {error}; remove it or give another folder") from None
        textures.append(convert_images(image.unsqueeze(0), channels, size)[0])
    return torch.stack(textures)
