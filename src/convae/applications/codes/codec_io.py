"""``convae encode`` and ``decode`` for codec runs: one bitstream per image, at the image's own size.

``--out DIR/`` writes one file per image, named as the image (``photos/a/b.jpg`` →
``DIR/a/b.cvc``); ``--out FILE.cvc`` packs them all in one file with their names. The
rate a user is shown is the file's: 8 × bytes / pixels, next to the model's own likelihood
estimate of the payload, so the two can be compared (CompressAI's issue #236). Decoding
takes files, packs or folders of them and writes ``NAME.png`` under ``--out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from convae.applications.codes.bitstream import IMAGE_VERSION, PACK_VERSION, code_file_kind, pack, unpack
from convae.applications.codes.codec import ImageCodec
from convae.core.atomic import atomic_write_bytes
from convae.core.device import pick_device
from convae.core.errors import ConvaeError, DataError
from convae.core.images import UniqueNames, write_png
from convae.core.outputs import check_output_file, check_output_folder, check_output_picture
from convae.data.files import read_files_for_model
from convae.models.codec import CODEC_PRESETS
from convae.run import Run

SUFFIX = ".cvc"


def is_codec_run(run: Run) -> bool:
    return run.config["model"]["name"] in CODEC_PRESETS


def image_codec(run: Run, device: str = "auto") -> ImageCodec:
    target = pick_device(device)
    return ImageCodec(run.model(target), run.digest, target)


def _inputs(run: Run, inputs: Sequence[str | Path]) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """(name, uint8 C×H×W image) of every input file at its own size, and (path, reason) of each unreadable one."""
    read, failed = read_files_for_model(inputs, (run.config.input_shape[0], 1, 1), keep_size=True)
    unique = UniqueNames()
    return [(unique.take(found.output_name(SUFFIX).as_posix()), image) for found, image, _ in read], failed


def encode_codec_run(run: Run, out: str | Path, *, inputs: Sequence[str | Path] = (),
                     named: list[tuple[str, Any]] | None = None, device: str = "auto") -> dict[str, Any]:
    """Entropy-code every input file (or the given ``named`` images); the real rate and the model's estimate."""
    out = Path(out)
    packed = out.suffix.lower() == SUFFIX
    if packed:
        check_output_file(out, "--out", "codes")
    else:
        check_output_folder(out, "--out")
    images, failed = (named, []) if named is not None else _inputs(run, inputs)
    if not packed:
        for name, _ in images:  # every target checked before anything is written
            target = out / name
            if target.is_dir():
                raise ConvaeError(f"--out: {target} is a folder")
            check_output_file(target, "--out", "codes")
    codec = image_codec(run, device)
    records, pixels, estimate = [], 0, 0.0
    for name, image in images:
        data, bits = codec.encode(image)
        records.append((name, data))
        pixels += image.shape[1] * image.shape[2]
        estimate += bits
    if packed:
        atomic_write_bytes(out, pack(records))
        size = out.stat().st_size
    else:
        for name, data in records:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out / name, data)
        size = sum((out / name).stat().st_size for name, _ in records)
    return {"out": str(out), "images": len(records), "bytes": size, "pixels": pixels, "bpp": 8 * size / pixels,
            "bpp_estimate": estimate / pixels, "packed": packed, "failed": failed}


def _code_files(path: Path) -> list[tuple[str, str, bytes]]:
    """(output PNG name, name for messages, one-image file) of a code file, a pack, or every .cvc below a folder."""
    if not path.exists():
        raise ConvaeError(f"{path}: no such file or folder")
    if not path.is_dir():
        return _code_files_of(path, path.name)
    files = sorted(p for p in path.rglob(f"*{SUFFIX}") if p.is_file())
    if not files:
        raise ConvaeError(f"{path}: holds no {SUFFIX} code files")
    return [entry for file in files for entry in _code_files_of(file, file.relative_to(path).as_posix())]


def _code_files_of(file: Path, name: str) -> list[tuple[str, str, bytes]]:
    try:
        data = file.read_bytes()
    except OSError as error:
        raise DataError(f"{file}: cannot be read ({error.strerror or error})") from None
    kind = code_file_kind(data)
    if kind == PACK_VERSION:
        return [(str(Path(entry).with_suffix(".png")), f"{file} ({entry})", record)
                for entry, record in unpack(data, str(file))]
    if kind == IMAGE_VERSION:
        return [(str(Path(name).with_suffix(".png")), str(file), data)]
    if kind is None:
        raise DataError(f"{file}: not a convae code file")
    raise DataError(f"{file}: holds fixed-bit codes of a reconstruction run, not a codec's bitstream; decode it "
                    "with the run that encoded it")


def decode_codec(run: Run, codes: str | Path, out_dir: str | Path, device: str = "auto") -> list[Path]:
    """Decode code files (a file, a pack or a folder of them) into PNGs; every file checked first."""
    codes, out_dir = Path(codes), Path(out_dir)
    check_output_folder(out_dir, "--out")
    named = _code_files(codes)
    for name, _, _ in named:
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise DataError(f"{codes}: refusing output name {name!r} (must be a relative path inside --out)")
        check_output_picture(out_dir / relative)
    codec = image_codec(run, device)
    decoded = [(name, codec.decode(data, label)) for name, label, data in named]  # all, before any PNG
    return [write_png(out_dir / name, image) for name, image in decoded]
