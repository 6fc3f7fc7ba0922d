"""``convae encode``, ``decode`` and ``embed``: code files from images and images from code files.

:func:`encode_run` codes a dataset split or your image files, quantizes them per code
channel to 4, 6 or 8 bits (or keeps float32 with ``bits=32``) and writes an ``.npz`` or
the compact ``.cvc`` binary (format.py). The file records the run's digest (the SHA-256
of its weights); :func:`decode_file` refuses a file from another run.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from convae.applications.codes.codec_io import decode_codec, encode_codec_run, is_codec_run
from convae.applications.codes.format import BITS_CHOICES, read_codes, write_codes
from convae.applications.codes.quantize import (
    check_code_shape,
    check_same_run,
    decode_codes,
    encode_batches,
    quantize,
)
from convae.applications.tiles import assemble, cut_tiles
from convae.core.atomic import atomic_write_bytes, atomic_write_text
from convae.core.device import pick_device
from convae.core.errors import ConvaeError, DataError
from convae.core.images import UniqueNames, to_uint8, write_png
from convae.core.outputs import check_output_file, check_output_folder, check_output_picture
from convae.data import ImageSet, load_dataset
from convae.data.convert import convert_images
from convae.data.files import read_files_for_model
from convae.run import AUTOENCODER, Run


def open_code_run(run_dir: str | Path | Run, verb: str) -> Run:
    return Run.of(run_dir, kind=AUTOENCODER, verb=verb)


def dataset_images(run: Run, dataset: str | None, split: str, limit: int | None = None) -> ImageSet:
    """A dataset split converted to the run's input channels and size (the run's own split by default)."""
    if split not in ("train", "test"):
        raise ConvaeError(f"--split must be train or test, got {split!r}")
    channels, height, width = run.config.input_shape
    patch = run.config.tiling.patch
    if patch and not (dataset is None or dataset == run.config.dataset_spec):
        raise ConvaeError(f"a patch-trained run takes {patch}×{patch} patches of its own dataset, not {dataset}")
    if dataset is None or dataset == run.config.dataset_spec:
        splits = run.splits()
        data = splits.measured(splits.split(split))  # a patch run: fixed patches of the split
        if tuple(data.shape) != (channels, height, width):  # a colorize run takes the gray image
            data = ImageSet(convert_images(data.images, channels, (height, width)), data.labels, data.classes,
                            data.split, data.name, data.ids)
    else:
        data = load_dataset(dataset, split, data_dir=run.data_dir or run.config.training.data_dir, channels=channels,
                            image_size=(height, width))
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


def file_images(inputs: Sequence[str | Path], input_shape: Sequence[int]
                ) -> tuple[torch.Tensor, list[str], list[str], list[str], list[tuple[str, str]]]:
    """The user's files as uint8 N×C×H×W in the run's shape: their paths, output names, conversion
    notes, and (path, reason) of each file that could not be read (skipped, never fatal alone)."""
    read, failed = read_files_for_model(inputs, input_shape)
    unique = UniqueNames()
    return (torch.stack([image for _, image, _ in read]), [str(found.path) for found, _, _ in read],
            [unique.take(found.output_name().as_posix()) for found, _, _ in read], [note for _, _, note in read],
            failed)


def tiled_file_images(inputs: Sequence[str | Path], input_shape: Sequence[int]
                      ) -> tuple[torch.Tensor, list[str], list[str], list[str], list[tuple[str, str]], list[dict]]:
    """Like :func:`file_images` for a patch-trained run: every file at its own size, cut into
    tiles of the patch; one code per tile, and per file its size and tile places for decode."""
    channels, th, tw = (int(v) for v in input_shape)
    read, failed = read_files_for_model(inputs, input_shape, keep_size=True)
    tiles, ids, names, notes, layout = [], [], [], [], []
    unique = UniqueNames()
    for found, image, note in read:
        cut, places = cut_tiles(image, (th, tw))
        name = unique.take(found.output_name().as_posix())
        tiles.append(cut)
        ids += [str(found.path)] * len(cut)
        names += [name] * len(cut)
        notes.append(note)
        layout.append({"name": name, "size": list(image.shape[1:]), "places": [list(p) for p in places]})
    return torch.cat(tiles), ids, names, notes, failed, layout


def encode_run(
    run_dir: str | Path | Run,
    out: str | Path,
    *,
    inputs: Sequence[str | Path] = (),
    dataset: str | None = None,
    split: str = "test",
    bits: int | None = None,
    fmt: str | None = None,
    limit: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Encode images (files/folders, or a dataset split) into a code file; return a summary with its rate.

    A codec run (``--model codec``/``codec-hyper``) entropy-codes each image at its own size
    instead (convae.applications.codes.codec_io); its rate was set by λ in training, not ``bits``.
    """
    if bool(inputs) == bool(dataset):
        raise ConvaeError("give either IMAGE/FOLDER arguments or --dataset, not both" if inputs
                          else "nothing to encode: give IMAGE/FOLDER arguments or --dataset NAME")
    run = open_code_run(run_dir, "convae encode")
    if is_codec_run(run):
        if bits is not None or fmt is not None:
            raise ConvaeError(f"{run.path} is a codec run: its rate was set by --loss {run.config.training.loss} "
                              "in training; drop --bits and --format")
        named = None
        if dataset:  # a dataset split at its own size, named SPLIT-INDEX
            data = dataset_images(run, dataset, split, limit)
            named = [(f"{split}-{i:05d}.cvc", image) for i, image in enumerate(data.images)]
        return {"codec": True, **encode_codec_run(run, out, inputs=inputs, named=named, device=device)}
    bits = 8 if bits is None else bits
    if bits not in BITS_CHOICES:
        raise ConvaeError(f"--bits must be one of {', '.join(map(str, BITS_CHOICES))}, got {bits}")
    out = Path(out)
    fmt = fmt or ("bin" if out.suffix.lower() in (".cvc", ".bin") else "npz")
    if fmt not in ("npz", "bin"):
        raise ConvaeError(f"--format must be npz or bin, got {fmt!r}")
    check_output_file(out, "--out", "codes")
    target = pick_device(device)
    model, config = run.model(target), run.config
    input_shape = config.input_shape
    notes: list[str] = []
    failed: list[tuple[str, str]] = []
    tiled = config.tiling.tiled
    layout: list[dict] = []
    if dataset and tiled:
        raise ConvaeError("a patch-trained run encodes whole image files in tiles of its patch; give IMAGE/FOLDER "
                          "arguments instead of --dataset")
    if dataset:
        data = dataset_images(run, dataset, split, limit)
        images, labels, classes = data.images, data.labels.numpy(), data.classes
        ids = data.ids or [f"{dataset}:{split}:{i}" for i in range(len(data))]
        names = None
        source = {"dataset": dataset, "split": split, "first": 0}
    elif tiled:
        images, ids, names, notes, failed, layout = tiled_file_images(inputs, input_shape)
        labels, classes, source = None, [], {"tiles": layout, "tile": list(input_shape[1:])}
    else:
        images, ids, names, notes, failed = file_images(inputs, input_shape)
        labels, classes, source = None, [], {}
    run_hash = run.digest
    values, switches = encode_batches(model, images, target)
    codes = quantize(values, bits, run_hash, switches)
    codes.ids, codes.names, codes.labels, codes.classes, codes.source = ids, names, labels, classes, source
    meta = {"names": names, "source": source} if tiled else {"names": names} if names else {"source": source}
    size = write_codes(out, codes, fmt, meta)
    pixels = sum(t["size"][0] * t["size"][1] for t in layout) if tiled else len(codes) * input_shape[1] * input_shape[2]
    return {"out": str(out), "format": fmt, "images": len(layout) if tiled else len(codes),
            **({"tiles": len(codes)} if tiled else {}), "bits": bits, "code_shape": list(codes.code_shape),
            "switch_levels": len(switches), "bytes": size, "bpp": 8 * size / pixels,
            "weights_hash": run_hash[:16], "converted": sum(bool(n) for n in notes), "failed": failed}


def decode_file(run_dir: str | Path | Run, codes_path: str | Path, out_dir: str | Path, *, device: str = "auto") -> list[Path]:
    """Decode a code file with its run into PNGs under ``out_dir``; refuse another run's codes.

    A codec run decodes its bitstreams: a file, a pack, or a folder of them (codec_io)."""
    run = open_code_run(run_dir, "convae decode")
    if is_codec_run(run):
        return decode_codec(run, codes_path, out_dir, device)
    codes = read_codes(codes_path)
    target = pick_device(device)
    model = run.model(target)
    check_same_run(codes, run.digest, codes_path, run_dir)
    check_code_shape(model, codes, run.config.input_shape, codes_path)
    out_dir = Path(out_dir)
    check_output_folder(out_dir, "--out")
    tiles = codes.source.get("tiles")
    names = [t["name"] for t in tiles] if tiles else codes.output_names()
    if tiles and sum(len(t["places"]) for t in tiles) != len(codes):
        raise DataError(f"{codes_path}: its tile layout does not match its {len(codes)} codes")
    for name in names:  # all checked before any PNG is written
        relative = Path(name)
        if (not tiles and len(names) != len(codes)) or relative.is_absolute() or ".." in relative.parts or relative.suffix.lower() != ".png":
            raise DataError(f"{codes_path}: refusing output name {name!r} (must be a relative .png path inside --out)")
        check_output_picture(out_dir / name)
    outputs = decode_codes(model, codes, target)
    if tiles:  # a patch run's codes: each image put back together from its tiles, at its own size
        start, whole = 0, []
        for entry in tiles:
            count = len(entry["places"])
            whole.append(assemble(outputs[start:start + count], [tuple(p) for p in entry["places"]],
                                  tuple(entry["size"])))
            start += count
        outputs = whole
    written = []
    for name, image in zip(names, outputs):
        written.append(write_png(out_dir / name, to_uint8(image)))
    return written


def embed_run(run_dir: str | Path | Run, out: str | Path, *, dataset: str | None = None, split: str = "test",
              limit: int | None = None, device: str = "auto") -> dict[str, Any]:
    """Float codes (flattened) with ids and labels, as .csv (one row per image) or .npz."""
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".npz"):
        raise ConvaeError(f"--out {out}: must end in .csv or .npz")
    check_output_file(out, "--out", "embedding")
    run = open_code_run(run_dir, "convae embed")
    target = pick_device(device)
    model = run.model(target)
    dataset = dataset or run.config.dataset_spec
    data = dataset_images(run, dataset, split, limit)
    values, _ = encode_batches(model, data.images, target)
    flat = values.flatten(1).numpy()
    ids = data.ids or [f"{dataset}:{split}:{i}" for i in range(len(data))]
    labels = data.labels.numpy()
    names = [data.classes[v] if 0 <= v < len(data.classes) else "" for v in labels]
    if out.suffix.lower() == ".npz":
        buffer = io.BytesIO()
        np.savez_compressed(buffer, codes=values.numpy(), ids=np.array(ids, dtype=str), labels=labels,
                            classes=np.array(data.classes, dtype=str), weights_hash=np.array(run.digest))
        atomic_write_bytes(out, buffer.getvalue())
    else:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["id", "label", "class", *[f"z{i}" for i in range(flat.shape[1])]])
        for row_id, label, name, row in zip(ids, labels, names, flat):
            writer.writerow([row_id, int(label), name, *(repr(float(v)) for v in row)])
        atomic_write_text(out, text.getvalue())
    return {"out": str(out), "images": len(data), "dims": int(flat.shape[1]), "code_shape": list(values.shape[1:])}


