"""``convae evaluate --rate`` for a codec run: its real bitstreams beside JPEG, WebP and AVIF.

Every image is entropy-coded into its own file exactly as ``convae encode`` writes it, so
``bpp_per_image`` is the files' bytes (16 bytes of header and checksum included), and decoded
with the bit-exact decoder. The model's likelihood estimate of the payload is kept beside
it (``bpp_estimate``), so the distance between the two is on record.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from convae.applications.codes.bitstream import OVERHEAD
from convae.applications.codes.codec import ImageCodec
from convae.data import ImageSet
from convae.metrics import set_psnr_ssim


def codec_rows(codec: ImageCodec, images: ImageSet, label: str) -> list[dict[str, Any]]:
    """One row: the run's bitstreams over ``images`` (one file each), with coding speed."""
    estimate, files = 0.0, []
    started = time.perf_counter()
    for image in images.images:
        data, bits = codec.encode(image)
        files.append(data)
        estimate += bits
    encode_seconds = time.perf_counter() - started
    started = time.perf_counter()
    decoded = torch.stack([codec.decode(data, f"image {i}") for i, data in enumerate(files)])
    decode_seconds = time.perf_counter() - started
    psnr, ssim = set_psnr_ssim(decoded.float().div(255), images.images.float().div(255))
    _, height, width = images.shape
    pixels = len(images) * height * width
    total = sum(len(data) for data in files)
    return [{
        "codec": "convae", "setting": label, "bpp_per_image": 8 * total / pixels,
        "bpp_amortised": 8 * (total - OVERHEAD * len(files)) / pixels, "bpp_estimate": estimate / pixels,
        "header_bytes": OVERHEAD, "bytes_total": total, "psnr": psnr, "ssim": ssim,
        "encode_mp_per_s": pixels / 1e6 / max(encode_seconds, 1e-9),
        "decode_mp_per_s": pixels / 1e6 / max(decode_seconds, 1e-9),
    }]
