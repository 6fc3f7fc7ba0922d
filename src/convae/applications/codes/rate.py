"""Rate–distortion: bits per pixel against PSNR/SSIM, next to PNG, JPEG and WebP.

Conventions: bits per pixel (bpp) = bits / (H·W) pixel positions of the original image
(for RGB that is 3 samples). PSNR is 10·log10(1/MSE) of the MSE over all images (the way
``convae evaluate`` reports it); SSIM is the mean over images. Image codecs decode to
uint8; the autoencoder's output is clamped to [0, 1]. Headers are counted honestly, per
image and amortised over the set.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from convae.applications.codes.codec import ImageCodec
from convae.applications.codes.codec_io import is_codec_run
from convae.applications.codes.codec_rate import codec_rows
from convae.applications.codes.format import BITS_CHOICES, to_bytes
from convae.applications.codes.io import dataset_images, open_code_run, sample_images
from convae.applications.codes.quantize import decode_codes, encode_batches, quantize
from convae.core.device import pick_device
from convae.core.errors import ConvaeError
from convae.data import ImageSet
from convae.metrics import set_psnr_ssim
from convae.run import Run, tensors_checksum

RATE_FILE = "rate-{split}.json"
JPEG_QUALITIES = (10, 30, 50, 75, 95)
WEBP_QUALITIES = (10, 30, 50, 75, 95)
AVIF_QUALITIES = (10, 30, 50, 75, 95)


def rate_distortion(run: str | Path | Run | tuple[torch.nn.Module, Any], images: ImageSet,
                    bits: Sequence[int] = BITS_CHOICES, device: str | torch.device = "cpu") -> dict[str, Any]:
    """convae's rows of the rate–distortion table: one per ``bits`` setting.

    ``bpp_amortised`` is one .cvc file holding all the images (header once); ``bpp_per_image``
    is the mean size of a .cvc file holding one image with the same scales (header, scales and
    hash repeated in every file). Neither counts the decoder weights.
    """
    model = open_code_run(run, "rate_distortion").model(device) if not isinstance(run, tuple) else run[0]
    run_hash = tensors_checksum(model.state_dict())
    values, switches = encode_batches(model, images.images, device)
    target = images.images.float().div(255)
    _, height, width = images.shape
    pixels = height * width
    rows = []
    float_psnr = set_psnr_ssim(decode_codes(model, quantize(values, 32, run_hash, switches), device), target)[0]
    for b in bits:
        codes = quantize(values, b, run_hash, switches)
        psnr, ssim = set_psnr_ssim(decode_codes(model, codes, device), target)
        whole = len(to_bytes(codes))
        # One file per image with the set's scales: header, scales and hash paid by every image.
        single = [len(to_bytes(codes.take([i]))) for i in range(len(codes))]
        header = len(to_bytes(codes.take([])))  # everything but the payload, its length field included
        rows.append({
            "codec": "convae", "setting": f"{b} bits" if b != 32 else "float32",
            "bits": b, "bpp_per_image": 8 * float(np.mean(single)) / pixels,
            "bpp_amortised": 8 * whole / len(images) / pixels,
            "header_bytes": header, "bytes_total": whole, "psnr": psnr, "ssim": ssim,
            "switch_bits_per_image": sum(s.bits * int(np.prod(s.positions.shape[1:])) for s in switches),
        })
    return {"rows": rows, "code_shape": list(values.shape[1:]), "float_psnr": float_psnr,
            "weights_hash": run_hash[:16], "images": len(images)}


def _common_affixes(files: list[bytes]) -> int:
    """Bytes every file shares at its start plus at its end: the header a multi-image container states once."""
    shortest = min(len(f) for f in files)
    prefix = 0
    while prefix < shortest and all(f[prefix] == files[0][prefix] for f in files):
        prefix += 1
    suffix = 0
    while suffix < shortest - prefix and all(f[-1 - suffix] == files[0][-1 - suffix] for f in files):
        suffix += 1
    return prefix + suffix


def classic_codec_rows(images: ImageSet, avif: bool = False) -> list[dict[str, Any]]:
    """PNG, JPEG, WebP and, with ``avif``, AVIF (Pillow) rows: one file per image, decoded back, scored like convae's.

    ``bpp_per_image`` is the mean file size. ``bpp_amortised`` removes the bytes that every
    file has in common (the longest common prefix and suffix: signatures, image size, tables)
    and counts them once for the whole set.
    """
    from PIL import Image

    arrays = images.images.permute(0, 2, 3, 1).numpy()
    gray = arrays.shape[3] == 1
    target = images.images.float().div(255)
    _, height, width = images.shape
    pixels = height * width
    settings = [("PNG", "lossless", {"format": "PNG", "optimize": True})]
    settings += [("JPEG", f"quality {q}", {"format": "JPEG", "quality": q}) for q in JPEG_QUALITIES]
    settings += [("WebP", f"quality {q}", {"format": "WEBP", "quality": q, "method": 6}) for q in WEBP_QUALITIES]
    if avif:
        settings += [("AVIF", f"quality {q}", {"format": "AVIF", "quality": q}) for q in AVIF_QUALITIES]
    rows = []
    for codec, setting, options in settings:
        files, decoded = [], []
        for array in arrays:
            picture = Image.fromarray(array[:, :, 0] if gray else array)
            buffer = io.BytesIO()
            picture.save(buffer, **options)
            data = buffer.getvalue()
            files.append(data)
            back = np.asarray(Image.open(io.BytesIO(data)).convert("L" if gray else "RGB"))
            decoded.append(back[:, :, None] if gray else back)
        out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).float().div(255)
        psnr, ssim = set_psnr_ssim(out, target)
        sizes = np.array([len(f) for f in files], dtype=np.float64)
        shared = _common_affixes(files)
        rows.append({
            "codec": codec, "setting": setting, "bpp_per_image": 8 * float(sizes.mean()) / pixels,
            "bpp_amortised": 8 * (float(sizes.mean()) - shared + shared / len(files)) / pixels,
            "header_bytes": shared, "bytes_total": int(sizes.sum()),
            "psnr": psnr if math.isfinite(psnr) else None,  # None: lossless (JSON has no infinity)
            "ssim": ssim,
        })
    return rows


def rate_figure(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """PSNR and SSIM against bpp, one line per codec, per-image (solid) and amortised (dashed)."""
    from convae.viz import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row.get("label", row["codec"]), []).append(row)
    for index, (label, group) in enumerate(groups.items()):
        group = sorted(group, key=lambda r: r["bpp_amortised"])
        colour = f"C{index}"
        for axis, key in zip(axes, ("psnr", "ssim")):
            shown = [r for r in group if r[key] is not None]  # lossless PNG has no PSNR
            if not shown:
                continue
            axis.plot([r["bpp_per_image"] for r in shown], [r[key] for r in shown], "o-", color=colour,
                      label=f"{label}, per image")
            axis.plot([r["bpp_amortised"] for r in shown], [r[key] for r in shown], "x--", color=colour,
                      label=f"{label}, amortised", alpha=0.6)
    for axis, name in zip(axes, ("PSNR (dB)", "SSIM")):
        axis.set_xscale("log")
        axis.set_xlabel("bits per pixel (log scale)")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
    fig.suptitle(title)
    return save_figure(fig, path)


def evaluate_rate(run_dir: str | Path | Run, *, split: str = "test", limit: int | None = 1000,
                  bits: Sequence[int] = BITS_CHOICES, device: str = "auto") -> dict[str, Any]:
    """``convae evaluate --rate``: the table over (a seeded random ``limit`` images of) a split, saved as
    RUN_DIR/rate-SPLIT.json, and figures/rate_distortion.png."""
    run = open_code_run(run_dir, "convae evaluate --rate")
    target = pick_device(device)
    model, config = run.model(target), run.config
    if config.task != "reconstruct":
        raise ConvaeError(f"{run.path}: a {config.task} run; --rate measures runs that reconstruct their input")
    data = sample_images(dataset_images(run, None, split), limit)
    if is_codec_run(run):
        codec = ImageCodec(model, run.digest, target)
        result = {"rows": codec_rows(codec, data, config.training.loss), "code_shape": [],
                  "weights_hash": run.digest[:16]}
    else:
        result = rate_distortion((model, config), data, bits, target)
    rows = result["rows"] + classic_codec_rows(data, avif=is_codec_run(run))
    payload = {"run": str(run.path), "dataset": config["dataset"]["spec"], "split": split, "images": len(data),
               "image_shape": list(data.shape), "code_shape": result["code_shape"],
               "weights_hash": result["weights_hash"], "rows": rows,
               "conventions": "bpp = bits / (H×W) pixel positions; per image = one file per image with its header; "
                              "amortised = one header for the set (convae: one .cvc file of all codes; image codecs: "
                              "the bytes all files share counted once); decoder weights not counted; PSNR from the "
                              "mean MSE, SSIM mean over images; image codecs decode to uint8, convae clamped to [0,1]"}
    run.write_json(RATE_FILE.format(split=split), payload)
    payload["figure"] = str(rate_figure(rows, run.figures / "rate_distortion.png",
                                        f"{config['model']['name']} on {config['dataset']['spec']}: "
                                        f"rate–distortion, {len(data)} {split} images"))
    return payload


def rate_table_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """The evaluate --rate table as printable cells."""
    return [(r["codec"], r["setting"], f"{r['bpp_per_image']:.3f}", f"{r['bpp_amortised']:.3f}",
             f"{r['psnr']:.2f} dB" if r["psnr"] is not None else "∞ (lossless)", f"{r['ssim']:.4f}")
            for r in result["rows"]]
