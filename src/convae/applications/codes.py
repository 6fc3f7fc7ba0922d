"""Compact codes: encode images to code files, decode them back, measure the rate, map the code space.

The autoencoder's first use in the references is compression (784 values → 200, a 28×28
digit → a 7×7×1 code). This module makes that practical:

* :func:`encode_run` codes a dataset split or the user's image files, quantizes them per code
  channel to 4, 6 or 8 bits (or keeps float32 with ``bits=32``) and writes an ``.npz`` or the
  compact ``.cvc`` binary (``codes_format.py``). The file records the SHA-256 hash of the
  run's weights; :func:`decode_file` refuses a file from another run.
* Bit-exactness: :func:`decode_codes` runs ``model.decode(dequantize(codes))`` in batches of
  :data:`DECODE_BATCH`, so decoding a file gives, bit for bit, what
  ``model.decode(dequantize(quantize(model.encode(x))))`` gives in one process.
* The ``unpool`` presets' codes carry max-pool switches, and their decoder cannot run
  without them. We store them (the argmax position inside each pool window, bit-packed with
  ceil(log2(kernel²)) bits) and count them in the rate; they are lossless, so quantization
  touches only the values.
* :func:`rate_distortion` / :func:`evaluate_rate` give bits per pixel vs PSNR/SSIM for each
  ``bits`` setting next to PNG, JPEG and WebP (Pillow) with honest header accounting, and
  draw ``figures/rate_distortion.png``.
* :func:`embed_run` exports codes with labels; :func:`show_latent` draws the 2-D map of the
  test codes (PCA, and t-SNE from scikit-learn) and interpolation strips.

Conventions: bits per pixel (bpp) = bits / (H·W) pixel positions of the original image
(for RGB that is 3 samples). PSNR is 10·log10(1/MSE) of the MSE over all images (the way
``convae evaluate`` reports it); SSIM is the mean over images. Image codecs decode to uint8;
the autoencoder's output is clamped to [0, 1] (PNG outputs are rounded to uint8).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from convae.applications.codes_format import (
    BITS_CHOICES,
    CodeSet,
    SwitchLevel,
    read_codes,
    to_bytes,
    write_codes,
)
from convae.data import ImageSet, load_dataset
from convae.data.files import find_image_files, image_for_model
from convae.errors import ConvaeError, DataError
from convae.metrics import batch_ssim, psnr_from_mse
from convae.models import SwitchedCode, code_values
from convae.runs import FIGURES, atomic_write_bytes, atomic_write_text, load_model, write_json

#: Encode and decode batch size. Decoding a file uses the same batches as the in-process
#: reference, which keeps the two bit-identical even where a kernel's result depends on batch size.
DECODE_BATCH = 256
#: Image codec settings compared in the rate–distortion table.
JPEG_QUALITIES = (10, 30, 50, 75, 95)
WEBP_QUALITIES = (10, 30, 50, 75, 95)


# -- the run's identity ---------------------------------------------------------------------


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes, bytes): the identity of a run's weights.

    Hashing tensors rather than model.safetensors keeps the hash independent of file metadata.
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def check_same_run(codes: CodeSet, run_hash: str, codes_path: str | Path, run_dir: str | Path) -> None:
    """Refuse codes another run made: its decoder would silently draw nonsense."""
    if not run_hash.startswith(codes.weights_hash):
        raise ConvaeError(
            f"{codes_path}: these codes come from another run (weights hash {codes.weights_hash[:16]}), "
            f"not from {run_dir} (weights hash {run_hash[:16]}); decode them with the run that encoded them"
        )


# -- encode, quantize, dequantize, decode -------------------------------------------------------


@torch.no_grad()
def encode_batches(model: torch.nn.Module, images: torch.Tensor, device: torch.device | str = "cpu"
                   ) -> tuple[torch.Tensor, list[SwitchLevel]]:
    """Float codes N×… of uint8 images, and the pool switches (as window positions) for unpool presets."""
    values, levels = [], []
    for start in range(0, len(images), DECODE_BATCH):
        x = images[start:start + DECODE_BATCH].to(device).float().div(255)
        code = model.encode(x)
        values.append(code_values(code).float().cpu())
        if isinstance(code, SwitchedCode):
            levels.append([(window_positions(idx.cpu(), size, _kernel(model, i)), tuple(size), _kernel(model, i))
                           for i, (idx, size) in enumerate(code.switches)])
    switches = []
    if levels:
        for i in range(len(levels[0])):
            positions = np.concatenate([batch[i][0] for batch in levels])
            switches.append(SwitchLevel(positions, levels[0][i][2], (int(levels[0][i][1][0]), int(levels[0][i][1][1]))))
    if not values:
        raise ConvaeError("nothing to encode (no images)")
    return torch.cat(values), switches


def _kernel(model: torch.nn.Module, level: int) -> int:
    """Kernel of the level-th switch pair (innermost pool first), read from the model's pool layers."""
    from convae.models.blocks import PoolWithSwitches  # noqa: PLC0415

    pools = [m.pool.kernel_size for m in model.modules() if isinstance(m, PoolWithSwitches)]
    kernel = pools[::-1][level]
    return int(kernel if isinstance(kernel, int) else kernel[0])


def window_positions(indices: torch.Tensor, size: Sequence[int], kernel: int) -> np.ndarray:
    """MaxPool2d flat argmax indices → the position 0..kernel²-1 inside each (stride = kernel) window."""
    _, _, h, w = indices.shape
    width = int(size[1])
    rows, cols = indices // width, indices % width
    di = rows - (torch.arange(h) * kernel).view(1, 1, h, 1)
    dj = cols - (torch.arange(w) * kernel).view(1, 1, 1, w)
    if bool(((di < 0) | (di >= kernel) | (dj < 0) | (dj >= kernel)).any()):
        raise ConvaeError("max-pool switches fall outside their windows; this model's pooling cannot be stored")
    return (di * kernel + dj).to(torch.uint8).numpy()


def flat_indices(level: SwitchLevel) -> torch.Tensor:
    """The inverse of :func:`window_positions`: MaxUnpool2d's flat indices."""
    pos = torch.from_numpy(level.positions.astype(np.int64))
    _, _, h, w = pos.shape
    k, width = level.kernel, level.pre_size[1]
    rows = (torch.arange(h) * k).view(1, 1, h, 1) + pos // k
    cols = (torch.arange(w) * k).view(1, 1, 1, w) + pos % k
    return rows * width + cols


def quantize(values: torch.Tensor, bits: int, run_hash: str, switches: list[SwitchLevel] | None = None,
             scales: tuple[np.ndarray, np.ndarray] | None = None) -> CodeSet:
    """Per code channel (dim 1) min/max quantization to ``bits`` bits; ``bits=32`` keeps float32.

    ``scales`` = (lo, step) reuses given scales (e.g. a whole set's, for one image of it).
    """
    if bits not in BITS_CHOICES:
        raise ConvaeError(f"--bits must be one of {', '.join(map(str, BITS_CHOICES))}, got {bits}")
    array = values.detach().cpu().float().numpy()
    if bits == 32:
        return CodeSet(array.astype(np.float32), 32, np.zeros(0, np.float32), np.zeros(0, np.float32), run_hash,
                       list(switches or []))
    channels = array.shape[1]
    per_channel = np.moveaxis(array, 1, 0).reshape(channels, -1)
    levels = 2**bits - 1
    if scales is None and per_channel.shape[1] == 0:  # no images: nothing to scale
        lo = step = np.zeros(channels, np.float32)
    elif scales is None:
        lo, step = half_scales(per_channel.min(axis=1), per_channel.max(axis=1), levels)
    else:
        lo, step = (np.asarray(s, np.float32) for s in scales)
    shape = (1, channels) + (1,) * (array.ndim - 2)
    safe = np.where(step > 0, step, 1).reshape(shape)
    q = np.rint((array - lo.reshape(shape)) / safe)
    q = np.where(step.reshape(shape) > 0, q, 0)
    return CodeSet(np.clip(q, 0, levels).astype(np.uint8), bits, lo, step, run_hash, list(switches or []))


def half_scales(lo: np.ndarray, hi: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (lo, step) that float16 represents exactly, with lo ≤ min and lo + levels·step ≥ max.

    The scales are stored as float16 (half the header of float32: it matters for a file of
    one image); rounding lo down and step up keeps every value inside the quantizer's range.
    """
    with np.errstate(over="ignore"):
        lo16 = lo.astype(np.float16)
        lo16 = np.where(lo16.astype(np.float32) > lo, np.nextafter(lo16, np.float16(-np.inf)), lo16)
        step = ((hi.astype(np.float32) - lo16.astype(np.float32)) / levels).astype(np.float32)
        step16 = step.astype(np.float16)
        step16 = np.where(step16.astype(np.float32) < step, np.nextafter(step16, np.float16(np.inf)), step16)
    if not (np.isfinite(lo16).all() and np.isfinite(step16).all()):
        raise ConvaeError("code values beyond ±65504 cannot be quantized with float16 scales; use --bits 32")
    return lo16.astype(np.float32), step16.astype(np.float32)


def dequantize(codes: CodeSet) -> torch.Tensor:
    """Float32 code values: ``lo + q · step`` per channel (the stored floats for ``bits=32``)."""
    if codes.bits == 32:
        return torch.from_numpy(np.ascontiguousarray(codes.q, dtype=np.float32))
    shape = (1, len(codes.lo)) + (1,) * (codes.q.ndim - 2)
    lo = torch.from_numpy(codes.lo.astype(np.float32)).view(shape)
    step = torch.from_numpy(codes.step.astype(np.float32)).view(shape)
    return lo + torch.from_numpy(codes.q.astype(np.float32)) * step


def model_code(codes: CodeSet, values: torch.Tensor, start: int, stop: int) -> torch.Tensor | SwitchedCode:
    """Rows start:stop of the dequantized values as the decoder takes them (with switches if any)."""
    part = values[start:stop]
    if not codes.switches:
        return part
    pairs = tuple((flat_indices(SwitchLevel(level.positions[start:stop], level.kernel, level.pre_size)),
                   torch.Size(level.pre_size)) for level in codes.switches)
    return SwitchedCode(part, pairs)


@torch.no_grad()
def decode_codes(model: torch.nn.Module, codes: CodeSet, device: torch.device | str = "cpu") -> torch.Tensor:
    """The model's raw output N×C×H×W for ``codes`` (not clamped), decoded in DECODE_BATCH batches."""
    values = dequantize(codes)
    outputs = []
    for start in range(0, len(codes), DECODE_BATCH):
        code = model_code(codes, values, start, start + DECODE_BATCH)
        if isinstance(code, SwitchedCode):
            code = SwitchedCode(code.values.to(device), tuple((i.to(device), s) for i, s in code.switches))
        else:
            code = code.to(device)
        outputs.append(model.decode(code).float().cpu())
    return torch.cat(outputs)


def _check_code_shape(model: torch.nn.Module, codes: CodeSet, input_shape: Sequence[int], path: str | Path) -> None:
    with torch.no_grad():
        probe = code_values(model.encode(torch.zeros(1, *input_shape)))
    if tuple(probe.shape[1:]) != codes.code_shape:
        raise ConvaeError(f"{path}: codes of shape {codes.code_shape}, but this run's codes are {tuple(probe.shape[1:])}")


# -- what to encode -----------------------------------------------------------------------------


def dataset_images(config: dict[str, Any], dataset: str, split: str, limit: int | None = None) -> ImageSet:
    """A dataset split converted to the run's input channels and size."""
    if split not in ("train", "test"):
        raise ConvaeError(f"--split must be train or test, got {split!r}")
    channels, height, width = (int(v) for v in config["model"]["input_shape"])
    data_dir = config.get("training", {}).get("data_dir")
    data = load_dataset(dataset, split, data_dir=data_dir, channels=channels, image_size=(height, width))
    if limit is not None:
        if limit < 1:
            raise ConvaeError(f"--limit must be at least 1, got {limit}")
        data = data.subset(range(min(limit, len(data))))
    return data


def sample_images(data: ImageSet, n: int | None, seed: int = 0) -> ImageSet:
    """A seeded random ``n`` images of a split, in split order (all of it when n is None or larger).

    Split files are often sorted by class (the CIFAR-10 PNG folders are), so "the first n"
    would measure one class; a fixed seed keeps the sample the same from run to run.
    """
    if n is None or n >= len(data):
        return data
    if n < 1:
        raise ConvaeError(f"the image count must be at least 1, got {n}")
    generator = torch.Generator().manual_seed(seed)
    return data.subset(torch.randperm(len(data), generator=generator)[:n].sort().values)


def file_images(inputs: Sequence[str | Path], input_shape: Sequence[int]) -> tuple[torch.Tensor, list[str], list[str], list[str]]:
    """The user's files as uint8 N×C×H×W in the run's shape, their paths, output names and conversion notes."""
    images, ids, names, notes = [], [], [], []
    for found in find_image_files(inputs):
        if found.error:
            raise DataError(f"{found.path}: {found.error}")
        image, note = image_for_model(found.path, input_shape)
        images.append(image)
        ids.append(str(found.path))
        names.append(found.output_name().as_posix())
        notes.append(note)
    if not images:
        raise ConvaeError("no images to encode")
    return torch.stack(images), ids, _unique(names), notes


def _unique(names: list[str]) -> list[str]:
    """Output names made unique (``-2``, ``-3`` … appended) so no PNG overwrites another."""
    seen: set[str] = set()
    result = []
    for name in names:
        stem, number, candidate = name[:-4], 2, name
        while candidate in seen:
            candidate, number = f"{stem}-{number}.png", number + 1
        seen.add(candidate)
        result.append(candidate)
    return result


def encode_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    inputs: Sequence[str | Path] = (),
    dataset: str | None = None,
    split: str = "test",
    bits: int = 8,
    fmt: str | None = None,
    limit: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Encode images (files/folders, or a dataset split) into a code file; return a summary with its rate."""
    from convae.train import pick_device  # noqa: PLC0415

    if bool(inputs) == bool(dataset):
        raise ConvaeError("give either IMAGE/FOLDER arguments or --dataset, not both" if inputs
                          else "nothing to encode: give IMAGE/FOLDER arguments or --dataset NAME")
    if bits not in BITS_CHOICES:
        raise ConvaeError(f"--bits must be one of {', '.join(map(str, BITS_CHOICES))}, got {bits}")
    out = Path(out)
    fmt = fmt or ("bin" if out.suffix.lower() in (".cvc", ".bin") else "npz")
    if fmt not in ("npz", "bin"):
        raise ConvaeError(f"--format must be npz or bin, got {fmt!r}")
    target = pick_device(device)
    model, config = load_model(Path(run_dir), target)
    input_shape = tuple(int(v) for v in config["model"]["input_shape"])
    notes: list[str] = []
    if dataset:
        data = dataset_images(config, dataset, split, limit)
        images, labels, classes = data.images, data.labels.numpy(), data.classes
        ids = data.ids or [f"{dataset}:{split}:{i}" for i in range(len(data))]
        names = None
        source = {"dataset": dataset, "split": split, "first": 0}
    else:
        images, ids, names, notes = file_images(inputs, input_shape)
        labels, classes, source = None, [], {}
    run_hash = weights_hash(model)
    values, switches = encode_batches(model, images, target)
    codes = quantize(values, bits, run_hash, switches)
    codes.ids, codes.names, codes.labels, codes.classes, codes.source = ids, names, labels, classes, source
    meta = {"names": names} if names else {"source": source}
    size = write_codes(out, codes, fmt, meta)
    pixels = len(codes) * input_shape[1] * input_shape[2]
    return {"out": str(out), "format": fmt, "images": len(codes), "bits": bits, "code_shape": list(codes.code_shape),
            "switch_levels": len(switches), "bytes": size, "bpp": 8 * size / pixels,
            "weights_hash": run_hash[:16], "converted": sum(bool(n) for n in notes)}


def decode_file(run_dir: str | Path, codes_path: str | Path, out_dir: str | Path, *, device: str = "auto") -> list[Path]:
    """Decode a code file with its run into PNGs under ``out_dir``; refuse another run's codes."""
    from PIL import Image  # noqa: PLC0415

    from convae.train import pick_device  # noqa: PLC0415

    codes = read_codes(codes_path)
    target = pick_device(device)
    model, config = load_model(Path(run_dir), target)
    check_same_run(codes, weights_hash(model), codes_path, run_dir)
    _check_code_shape(model, codes, tuple(int(v) for v in config["model"]["input_shape"]), codes_path)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConvaeError(f"--out {out_dir}: exists and is not a folder")
    names = codes.output_names()
    for name in names:  # all checked before any PNG is written
        relative = Path(name)
        if len(names) != len(codes) or relative.is_absolute() or ".." in relative.parts or relative.suffix.lower() != ".png":
            raise DataError(f"{codes_path}: refusing output name {name!r} (must be a relative .png path inside --out)")
    outputs = decode_codes(model, codes, target)
    pixels = to_uint8(outputs)
    written = []
    for name, image in zip(names, pixels):
        path = out_dir / name
        array = image.permute(1, 2, 0).numpy()
        picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (clamped) → uint8, rounded."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


# -- rate–distortion ------------------------------------------------------------------------------


def _quality(outputs: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(PSNR of the mean MSE over all images, mean SSIM) of float outputs against float targets."""
    mse = (outputs.clamp(0, 1) - target).pow(2).flatten(1).mean(1).double()
    ssim = torch.cat([batch_ssim(outputs[i:i + 500], target[i:i + 500]) for i in range(0, len(target), 500)])
    return psnr_from_mse(float(mse.mean())), float(ssim.double().mean())


def rate_distortion(run: str | Path | tuple[torch.nn.Module, dict[str, Any]], images: ImageSet,
                    bits: Sequence[int] = BITS_CHOICES, device: str | torch.device = "cpu") -> dict[str, Any]:
    """convae's rows of the rate–distortion table: one per ``bits`` setting.

    ``bpp_amortised`` is one .cvc file holding all the images (header once); ``bpp_per_image``
    is the mean size of a .cvc file holding one image with the same scales (header, scales and
    hash repeated in every file). Neither counts the decoder weights.
    """
    model, config = load_model(Path(run), device) if not isinstance(run, tuple) else run
    run_hash = weights_hash(model)
    values, switches = encode_batches(model, images.images, device)
    target = images.images.float().div(255)
    _, height, width = images.shape
    pixels = height * width
    rows = []
    float_psnr = _quality(decode_codes(model, quantize(values, 32, run_hash, switches), device), target)[0]
    for b in bits:
        codes = quantize(values, b, run_hash, switches)
        psnr, ssim = _quality(decode_codes(model, codes, device), target)
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


def classic_codec_rows(images: ImageSet) -> list[dict[str, Any]]:
    """PNG, JPEG and WebP (Pillow) rows: one file per image, decoded back, scored like convae's.

    ``bpp_per_image`` is the mean file size. ``bpp_amortised`` removes the bytes that every
    file has in common (the longest common prefix and suffix: signatures, image size, tables)
    and counts them once for the whole set.
    """
    from PIL import Image  # noqa: PLC0415

    arrays = images.images.permute(0, 2, 3, 1).numpy()
    gray = arrays.shape[3] == 1
    target = images.images.float().div(255)
    _, height, width = images.shape
    pixels = height * width
    settings = [("PNG", "lossless", {"format": "PNG", "optimize": True})]
    settings += [("JPEG", f"quality {q}", {"format": "JPEG", "quality": q}) for q in JPEG_QUALITIES]
    settings += [("WebP", f"quality {q}", {"format": "WEBP", "quality": q, "method": 6}) for q in WEBP_QUALITIES]
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
        psnr, ssim = _quality(out, target)
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
    from convae.viz import plt, save_figure  # noqa: PLC0415

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


def evaluate_rate(run_dir: str | Path, *, split: str = "test", limit: int | None = 1000,
                  bits: Sequence[int] = BITS_CHOICES, device: str = "auto") -> dict[str, Any]:
    """``convae evaluate --rate``: the table over (a seeded random ``limit`` images of) a split, saved as
    RUN_DIR/rate-SPLIT.json, and figures/rate_distortion.png."""
    from convae.train import pick_device  # noqa: PLC0415

    run_dir = Path(run_dir)
    target = pick_device(device)
    model, config = load_model(run_dir, target)
    if config.get("task", "reconstruct") != "reconstruct":
        raise ConvaeError(f"{run_dir}: a {config['task']} run; --rate measures runs that reconstruct their input")
    data = sample_images(dataset_images(config, config["dataset"]["spec"], split), limit)
    result = rate_distortion((model, config), data, bits, target)
    rows = result["rows"] + classic_codec_rows(data)
    payload = {"run": str(run_dir), "dataset": config["dataset"]["spec"], "split": split, "images": len(data),
               "image_shape": list(data.shape), "code_shape": result["code_shape"],
               "weights_hash": result["weights_hash"], "rows": rows,
               "conventions": "bpp = bits / (H×W) pixel positions; per image = one file per image with its header; "
                              "amortised = one header for the set (convae: one .cvc file of all codes; image codecs: "
                              "the bytes all files share counted once); decoder weights not counted; PSNR from the "
                              "mean MSE, SSIM mean over images; image codecs decode to uint8, convae clamped to [0,1]"}
    write_json(run_dir / f"rate-{split}.json", payload)
    payload["figure"] = str(rate_figure(rows, run_dir / FIGURES / "rate_distortion.png",
                                        f"{config['model']['name']} on {config['dataset']['spec']}: "
                                        f"rate–distortion, {len(data)} {split} images"))
    return payload


# -- the code space -------------------------------------------------------------------------------


def embed_run(run_dir: str | Path, out: str | Path, *, dataset: str | None = None, split: str = "test",
              limit: int | None = None, device: str = "auto") -> dict[str, Any]:
    """Float codes (flattened) with ids and labels, as .csv (one row per image) or .npz."""
    from convae.train import pick_device  # noqa: PLC0415

    out = Path(out)
    if out.suffix.lower() not in (".csv", ".npz"):
        raise ConvaeError(f"--out {out}: must end in .csv or .npz")
    target = pick_device(device)
    model, config = load_model(Path(run_dir), target)
    dataset = dataset or config["dataset"]["spec"]
    data = dataset_images(config, dataset, split, limit)
    values, _ = encode_batches(model, data.images, target)
    flat = values.flatten(1).numpy()
    ids = data.ids or [f"{dataset}:{split}:{i}" for i in range(len(data))]
    labels = data.labels.numpy()
    names = [data.classes[v] if 0 <= v < len(data.classes) else "" for v in labels]
    if out.suffix.lower() == ".npz":
        buffer = io.BytesIO()
        np.savez_compressed(buffer, codes=values.numpy(), ids=np.array(ids, dtype=str), labels=labels,
                            classes=np.array(data.classes, dtype=str), weights_hash=np.array(weights_hash(model)))
        atomic_write_bytes(out, buffer.getvalue())
    else:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["id", "label", "class", *[f"z{i}" for i in range(flat.shape[1])]])
        for row_id, label, name, row in zip(ids, labels, names, flat):
            writer.writerow([row_id, int(label), name, *(repr(float(v)) for v in row)])
        atomic_write_text(out, text.getvalue())
    return {"out": str(out), "images": len(data), "dims": int(flat.shape[1]), "code_shape": list(values.shape[1:])}


def project_2d(flat: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """N×D codes → N×2 with PCA or t-SNE (scikit-learn)."""
    if method == "pca":
        from sklearn.decomposition import PCA  # noqa: PLC0415

        return PCA(n_components=2, random_state=seed).fit_transform(flat)
    from sklearn.manifold import TSNE  # noqa: PLC0415

    perplexity = float(min(30, max(2, (len(flat) - 1) // 3)))
    return TSNE(n_components=2, random_state=seed, init="pca", perplexity=perplexity).fit_transform(flat)


@torch.no_grad()
def show_latent(run_dir: str | Path, *, n: int = 2000, pairs: int = 4, steps: int = 8, tsne: bool = True,
                device: str = "auto") -> list[Path]:
    """figures/latent_pca.png (+ latent_tsne.png) of ``n`` (seeded random) test codes coloured by class, and
    figures/interpolations.png: ``pairs`` strips decoded along the line between two test codes."""
    from convae.train import pick_device  # noqa: PLC0415
    from convae.viz import _as_picture, plt, save_figure  # noqa: PLC0415

    run_dir = Path(run_dir)
    target = pick_device(device)
    model, config = load_model(run_dir, target)
    data = sample_images(dataset_images(config, config["dataset"]["spec"], "test"), n)
    values, switches = encode_batches(model, data.images, target)
    flat = values.flatten(1).numpy().astype(np.float64)
    figures = run_dir / FIGURES
    labels = data.labels.numpy()
    paths = []
    methods = ["pca"] + (["tsne"] if tsne and len(flat) >= 5 else [])
    for method in methods:
        xy = project_2d(flat, method) if len(flat) >= 2 else np.zeros((len(flat), 2))
        fig, axis = plt.subplots(figsize=(6.5, 5.5))
        known = labels >= 0
        if known.any():
            scatter = axis.scatter(xy[known, 0], xy[known, 1], c=labels[known], cmap="tab10", s=6,
                                   vmin=-0.5, vmax=max(9.5, len(data.classes) - 0.5))
            handles = [plt.Line2D([], [], marker="o", linestyle="", color=scatter.cmap(scatter.norm(i)), label=name)
                       for i, name in enumerate(data.classes) if (labels == i).any()]
            axis.legend(handles=handles, fontsize=7, loc="best", markerscale=1.2)
        if (~known).any():
            axis.scatter(xy[~known, 0], xy[~known, 1], c="gray", s=6)
        axis.set_title(f"{'PCA' if method == 'pca' else 't-SNE'} of {len(flat)} test codes "
                       f"({'×'.join(map(str, values.shape[1:]))})")
        axis.set_xticks([])
        axis.set_yticks([])
        paths.append(save_figure(fig, figures / f"latent_{method}.png"))
    if len(data) >= 2:
        paths.append(_interpolation_figure(model, data, values, switches, pairs, steps, figures / "interpolations.png",
                                           target, _as_picture, plt, save_figure))
    return paths


def interpolation_pairs(labels: list[int], pairs: int) -> list[tuple[int, int]]:
    """Image pairs from different classes, each class's first images in turn (0↔1, 2↔3, …).

    Unlabelled data (or a single class) gives consecutive pairs 0↔1, 2↔3, ….
    """
    firsts: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        if label >= 0:
            firsts.setdefault(label, []).append(index)
    classes = list(firsts)
    chosen: list[tuple[int, int]] = []
    if len(classes) >= 2:
        for k in range(pairs):
            a, b = classes[(2 * k) % len(classes)], classes[(2 * k + 1) % len(classes)]
            rank = (2 * k) // len(classes)
            if a != b and rank < len(firsts[a]) and rank < len(firsts[b]):
                chosen.append((firsts[a][rank], firsts[b][rank]))
    if not chosen:
        chosen = [(i, i + 1) for i in range(0, min(2 * pairs, len(labels) - 1), 2)]
    return chosen


def _interpolation_figure(model, data, values, switches, pairs, steps, path, device, as_picture, plt, save_figure):
    """Strips: image A, decodes of (1-t)·code_A + t·code_B for t in [0, 1], image B.

    Pairs are taken from different classes where labels allow. Unpool presets interpolate the
    values and keep image A's switches up to t = 0.5 and B's after (switches are discrete).
    """
    chosen = interpolation_pairs(data.labels.tolist(), pairs)
    ts = torch.linspace(0, 1, steps)
    fig, axes = plt.subplots(len(chosen), steps + 2, figsize=(1.3 * (steps + 2), 1.45 * len(chosen)), squeeze=False)
    for row, (a, b) in enumerate(chosen):
        mix = (1 - ts).view(-1, *[1] * (values.dim() - 1)) * values[a] + ts.view(-1, *[1] * (values.dim() - 1)) * values[b]
        if switches:
            pairs_ = []
            for level in switches:
                rows = np.stack([level.positions[a] if t <= 0.5 else level.positions[b] for t in ts.tolist()])
                pairs_.append((flat_indices(SwitchLevel(rows, level.kernel, level.pre_size)).to(device),
                               torch.Size(level.pre_size)))
            code = SwitchedCode(mix.to(device), tuple(pairs_))
        else:
            code = mix.to(device)
        decoded = model.decode(code).float().clamp(0, 1).cpu()
        pictures = [data.images[a].float() / 255, *decoded, data.images[b].float() / 255]
        for column, picture in enumerate(pictures):
            axis = axes[row][column]
            image, cmap = as_picture(picture)
            axis.imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title("A" if column == 0 else "B" if column == steps + 1 else f"t={ts[column - 1]:.2f}",
                               fontsize=7)
    fig.suptitle("decoded along the line between two test codes")
    return save_figure(fig, path)


def rate_table_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """The evaluate --rate table as printable cells."""
    return [(r["codec"], r["setting"], f"{r['bpp_per_image']:.3f}", f"{r['bpp_amortised']:.3f}",
             f"{r['psnr']:.2f} dB" if r["psnr"] is not None else "∞ (lossless)", f"{r['ssim']:.4f}")
            for r in result["rows"]]
