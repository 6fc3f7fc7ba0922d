"""Code files: quantized autoencoder codes on disk, as ``.npz`` or the compact ``.cvc`` binary.

A :class:`CodeSet` is everything ``convae decode`` needs besides the run: the quantized code
values, the per-channel dequantization (``lo`` and ``step``), the max-pool switches of the
``unpool`` presets, and the hash of the weights that produced it. This module only moves a
CodeSet to and from bytes; the model side (encode, quantize, decode) is in ``codes.py``.

Binary layout of ``.cvc``, version 2 (all integers little-endian)::

    offset size  field
    0      4     magic  b"\\x89CVC"  (the high byte catches text-mode mangling, as PNG's does)
    4      1     format version (2)
    5      1     bits per code value: 4, 6, 8, or 32 (float32, not quantized)
    6      1     flags: bit 0 payload is zlib-compressed, bit 1 a metadata block follows the payload
    7      1     ndim of one image's code shape
    8      8     weights hash: the first 8 bytes of the run's SHA-256 weights hash
    16     4     N, the number of images
    20     2·ndim  the code shape of one image (uint16 each)
    ..     1     L, the number of switch levels (0 unless the run is an unpool preset)
    ..     11·L  per level: kernel (uint8), pooled c, h, w and pre-pool H, W (uint16 each)
    ..     4·C   unless bits == 32: float16 lo[C] then float16 step[C], C = code_shape[0]
    ..     4     payload length in bytes
    ..     ...   payload: the quantized values bit-packed (``bits`` bits each, row-major), then each
                 switch level's positions bit-packed (ceil(log2(kernel²)) bits each); zlib-compressed
                 when that is smaller (flag bit 0)
    ..     4+M   only with flag bit 1: metadata length and a zlib-compressed UTF-8 JSON object
                 (the image names or the dataset source, so decode can name its PNGs)
    ..     4     CRC-32 (zlib's) of every byte before it: a flipped byte anywhere is refused

Version 1 had no checksum; such files are refused with a word to re-encode them. The ``.npz``
form carries a SHA-256 over its arrays (``checksum``), checked the same way.

Every reading problem (wrong magic, another format version, a truncated or corrupt file)
raises :class:`~convae.core.errors.DataError` with one line naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convae.core.atomic import atomic_write, atomic_write_bytes
from convae.core.errors import DataError

MAGIC = b"\x89CVC"
FORMAT_VERSION = 2
NPZ_FORMAT = "convae-codes"
BITS_CHOICES = (4, 6, 8, 32)
FLAG_ZLIB = 1
FLAG_META = 2
_FIXED = struct.Struct("<4sBBBB8sI")  # magic, version, bits, flags, ndim, hash8, N
_LEVEL = struct.Struct("<BHHHHH")  # kernel, c, h, w, pre-pool H, W


@dataclass
class SwitchLevel:
    """One max-pool's switches: the argmax position (0..kernel²-1) inside each pool window."""

    positions: np.ndarray  # uint8 N×c×h×w
    kernel: int
    pre_size: tuple[int, int]

    @property
    def bits(self) -> int:
        return max(1, math.ceil(math.log2(self.kernel * self.kernel)))


@dataclass
class CodeSet:
    """Quantized codes of N images plus what decoding them needs.

    ``q`` holds integers in [0, 2**bits) (uint8) or, for ``bits == 32``, the float32 codes.
    Value ``v`` of channel ``c`` is stored as ``round((v - lo[c]) / step[c])`` and read back as
    ``lo[c] + q * step[c]`` in float32.
    """

    q: np.ndarray
    bits: int
    lo: np.ndarray  # float32 C (empty for bits 32)
    step: np.ndarray  # float32 C (empty for bits 32)
    weights_hash: str  # hex SHA-256 (the .cvc file keeps its first 16 hex digits)
    switches: list[SwitchLevel] = field(default_factory=list)
    ids: list[str] | None = None
    names: list[str] | None = None
    labels: np.ndarray | None = None  # int64 N, -1 unknown
    classes: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.q.shape[0])

    @property
    def code_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.q.shape[1:])

    def output_names(self) -> list[str]:
        """PNG names for decode: the stored names, else ``SPLIT-INDEX.png`` from the dataset source."""
        if self.names:
            return list(self.names)
        first = int(self.source.get("first", 0))
        prefix = f"{self.source['split']}-" if self.source.get("split") else ""
        return [f"{prefix}{first + i:05d}.png" for i in range(len(self))]

    def take(self, indices: np.ndarray | list[int]) -> "CodeSet":
        """The same codes (same scales) for a subset of the images."""
        idx = np.asarray(indices, dtype=np.int64)
        return CodeSet(
            self.q[idx], self.bits, self.lo, self.step, self.weights_hash,
            [SwitchLevel(s.positions[idx], s.kernel, s.pre_size) for s in self.switches],
            [self.ids[i] for i in idx] if self.ids else None,
            [self.names[i] for i in idx] if self.names else None,
            self.labels[idx] if self.labels is not None else None, self.classes, {},
        )


# -- bit packing ------------------------------------------------------------------------


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Unsigned integers < 2**bits (bits ≤ 8), ``bits`` bits each, most significant first."""
    flat = np.ascontiguousarray(values, dtype=np.uint8).reshape(-1, 1)
    return np.packbits(np.unpackbits(flat, axis=1)[:, 8 - bits:].reshape(-1)).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    expanded = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits].reshape(count, bits)
    padded = np.zeros((count, 8), dtype=np.uint8)
    padded[:, 8 - bits:] = expanded
    return np.packbits(padded, axis=1).reshape(-1)


def _packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


# -- binary .cvc ------------------------------------------------------------------------


def header_bytes(codes: CodeSet) -> bytes:
    """Everything before the payload length: magic, version, shapes, switch levels, scales."""
    if codes.bits not in BITS_CHOICES:
        raise DataError(f"--bits must be one of {', '.join(map(str, BITS_CHOICES))}, got {codes.bits}")
    shape = codes.code_shape
    head = _FIXED.pack(MAGIC, FORMAT_VERSION, codes.bits, 0, len(shape), bytes.fromhex(codes.weights_hash[:16]),
                       len(codes))
    head += struct.pack(f"<{len(shape)}H", *shape) + struct.pack("<B", len(codes.switches))
    for level in codes.switches:
        head += _LEVEL.pack(level.kernel, *level.positions.shape[1:], *level.pre_size)
    if codes.bits != 32:
        for scale in (codes.lo, codes.step):
            if not np.array_equal(np.asarray(scale, np.float16).astype(np.float32), np.asarray(scale, np.float32)):
                raise DataError("code scales must be exactly representable as float16 (quantize() makes them so)")
        head += np.asarray(codes.lo, dtype="<f2").tobytes() + np.asarray(codes.step, dtype="<f2").tobytes()
    return head


def payload_bytes(codes: CodeSet) -> bytes:
    """The raw (uncompressed) payload: packed values, then each level's packed switch positions."""
    if codes.bits == 32:
        body = np.ascontiguousarray(codes.q, dtype="<f4").tobytes()
    else:
        body = pack_bits(codes.q, codes.bits)
    for level in codes.switches:
        body += pack_bits(level.positions, level.bits)
    return body


def to_bytes(codes: CodeSet, meta: dict[str, Any] | None = None) -> bytes:
    """The whole .cvc file; ``meta`` (names or dataset source) is optional and counted in its size."""
    head = bytearray(header_bytes(codes))
    raw = payload_bytes(codes)
    packed = zlib.compress(raw, 9)
    flags = 0
    if len(packed) < len(raw):
        raw, flags = packed, FLAG_ZLIB
    tail = b""
    if meta:
        block = zlib.compress(json.dumps(meta, separators=(",", ":")).encode("utf-8"), 9)
        tail, flags = struct.pack("<I", len(block)) + block, flags | FLAG_META
    head[6] = flags
    body = bytes(head) + struct.pack("<I", len(raw)) + raw + tail
    return body + struct.pack("<I", zlib.crc32(body))


def from_bytes(data: bytes, name: str | Path) -> CodeSet:
    """Parse a .cvc file; every problem is one DataError line naming ``name``."""
    reader = _Reader(data, name)
    magic, version, bits, flags, ndim, hash8, count = reader.unpack(_FIXED)
    if magic != MAGIC:
        raise DataError(f"{name}: not a convae code file (wrong magic bytes {magic!r})")
    if version != FORMAT_VERSION:
        newer = "a newer" if version > FORMAT_VERSION else "an older"
        raise DataError(f"{name}: code file format version {version} ({newer} convae); this convae reads version "
                        f"{FORMAT_VERSION} — re-encode the images with this version")
    if bits not in BITS_CHOICES:
        raise DataError(f"{name}: corrupt header (bits {bits} is not one of {BITS_CHOICES})")
    shape = reader.unpack(struct.Struct(f"<{ndim}H"))
    (levels,) = reader.unpack(struct.Struct("<B"))
    level_info = [reader.unpack(_LEVEL) for _ in range(levels)]
    channels = shape[0] if shape else 1
    lo = step = np.zeros(0, dtype=np.float32)
    if bits != 32:
        lo = np.frombuffer(reader.take(2 * channels), dtype="<f2").astype(np.float32)
        step = np.frombuffer(reader.take(2 * channels), dtype="<f2").astype(np.float32)
    (length,) = reader.unpack(struct.Struct("<I"))
    payload = reader.take(length)
    if flags & FLAG_ZLIB:
        try:
            payload = zlib.decompress(payload)
        except zlib.error as error:
            raise DataError(f"{name}: corrupt payload ({error})") from None
    count_values = count * int(np.prod(shape, dtype=np.int64))
    value_bytes = 4 * count_values if bits == 32 else _packed_size(count_values, bits)
    need = value_bytes + sum(_packed_size(count * c * h * w, SwitchLevel(np.zeros(0), k, (0, 0)).bits)
                             for k, c, h, w, _, _ in level_info)
    if len(payload) != need:
        raise DataError(f"{name}: payload holds {len(payload)} bytes, the header promises {need} (truncated or corrupt)")
    if bits == 32:
        q = np.frombuffer(payload[:value_bytes], dtype="<f4").astype(np.float32).reshape(count, *shape)
    else:
        q = unpack_bits(payload[:value_bytes], bits, count_values).reshape(count, *shape)
    switches, offset = [], value_bytes
    for kernel, c, h, w, pre_h, pre_w in level_info:
        level = SwitchLevel(np.zeros(0, dtype=np.uint8), kernel, (pre_h, pre_w))
        size = _packed_size(count * c * h * w, level.bits)
        level.positions = unpack_bits(payload[offset:offset + size], level.bits, count * c * h * w).reshape(count, c, h, w)
        switches.append(level)
        offset += size
    meta: dict[str, Any] = {}
    if flags & FLAG_META:
        (meta_length,) = reader.unpack(struct.Struct("<I"))
        try:
            meta = json.loads(zlib.decompress(reader.take(meta_length)).decode("utf-8"))
        except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{name}: corrupt metadata block ({error})") from None
    (crc,) = reader.unpack(struct.Struct("<I"))
    if reader.offset != len(data):
        raise DataError(f"{name}: {len(data) - reader.offset} unexpected bytes after the end of the code file")
    if crc != zlib.crc32(data[:-4]):
        raise DataError(f"{name}: checksum mismatch, the file was changed or damaged after convae wrote it; "
                        "nothing was decoded")
    return CodeSet(q, bits, lo, step, hash8.hex(), switches, names=meta.get("names"),
                   ids=meta.get("ids"), source=meta.get("source", {}))


class _Reader:
    """Sequential reads that turn running off the end into a 'truncated' error."""

    def __init__(self, data: bytes, name: str | Path) -> None:
        self.data, self.name, self.offset = data, name, 0

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise DataError(f"{self.name}: truncated code file ({len(self.data)} bytes, needs more than "
                            f"{self.offset + size - 1})")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        return layout.unpack(self.take(layout.size))


# -- .npz ---------------------------------------------------------------------------------


def to_npz(codes: CodeSet) -> bytes:
    """The .npz form: the same arrays, plus full ids, labels and class names (no pickled objects)."""
    arrays: dict[str, np.ndarray] = {
        "format": np.array(NPZ_FORMAT), "version": np.array(FORMAT_VERSION), "bits": np.array(codes.bits),
        "q": codes.q, "lo": np.asarray(codes.lo, np.float32), "step": np.asarray(codes.step, np.float32),
        "weights_hash": np.array(codes.weights_hash), "classes": np.array(codes.classes, dtype=str),
        "source": np.array(json.dumps(codes.source)),
    }
    if codes.ids is not None:
        arrays["ids"] = np.array(codes.ids, dtype=str)
    if codes.names is not None:
        arrays["names"] = np.array(codes.names, dtype=str)
    if codes.labels is not None:
        arrays["labels"] = np.asarray(codes.labels, np.int64)
    for i, level in enumerate(codes.switches):
        arrays[f"switch{i}_positions"] = level.positions
        arrays[f"switch{i}_meta"] = np.array([level.kernel, *level.pre_size], dtype=np.int64)
    arrays["checksum"] = np.array(arrays_checksum(arrays))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def arrays_checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every array but ``checksum``: name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(k for k in arrays if k != "checksum"):
        value = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def from_npz(data: bytes, name: str | Path) -> CodeSet:
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
        arrays = {key: archive[key] for key in archive.files}
    except Exception as error:  # an untrusted archive: zip, zlib, npy-header damage, "encrypted" flags
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"{name}: not a readable .npz code file ({reason})") from None
    if str(arrays.get("format", "")) != NPZ_FORMAT:
        raise DataError(f"{name}: an .npz file, but not a convae code file (no format={NPZ_FORMAT!r} entry)")
    try:
        version = int(arrays.get("version", -1))
    except (TypeError, ValueError):
        version = -1
    if version != FORMAT_VERSION:
        raise DataError(f"{name}: code file format version {version}; this convae reads version {FORMAT_VERSION} — "
                        "re-encode the images with this version")
    if str(arrays.get("checksum", "")) != arrays_checksum(arrays):
        raise DataError(f"{name}: checksum mismatch, the file was changed or damaged after convae wrote it; "
                        "nothing was decoded")
    try:
        switches = []
        for i in range(len([k for k in arrays if k.startswith("switch") and k.endswith("_meta")])):
            kernel, pre_h, pre_w = (int(v) for v in arrays[f"switch{i}_meta"])
            switches.append(SwitchLevel(arrays[f"switch{i}_positions"].astype(np.uint8), kernel, (pre_h, pre_w)))
        return CodeSet(
            arrays["q"], int(arrays["bits"]), arrays["lo"].astype(np.float32), arrays["step"].astype(np.float32),
            str(arrays["weights_hash"]), switches,
            [str(v) for v in arrays["ids"]] if "ids" in arrays else None,
            [str(v) for v in arrays["names"]] if "names" in arrays else None,
            arrays["labels"].astype(np.int64) if "labels" in arrays else None,
            [str(v) for v in arrays["classes"]], json.loads(str(arrays["source"])),
        )
    except (KeyError, ValueError) as error:
        raise DataError(f"{name}: incomplete convae code file (missing or bad entry {error})") from None


# -- files --------------------------------------------------------------------------------


def write_codes(path: str | Path, codes: CodeSet, fmt: str, meta: dict[str, Any] | None = None) -> int:
    """Write ``codes`` atomically as ``npz`` or ``bin``; return the file size in bytes."""
    path = Path(path)
    if fmt == "bin":
        data = to_bytes(codes, meta)
        atomic_write_bytes(path, data)
    elif fmt == "npz":
        data = to_npz(codes)
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
    else:
        raise DataError(f"--format must be npz or bin, got {fmt!r}")
    return len(data)


def read_codes(path: str | Path) -> CodeSet:
    """A .npz or .cvc code file, told apart by its first bytes (not its name)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such code file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a code file") from None
    if data[:4] == MAGIC:
        return from_bytes(data, path)
    if data[:2] == b"PK":
        return from_npz(data, path)
    if len(data) < 4 and MAGIC.startswith(data):
        raise DataError(f"{path}: truncated code file ({len(data)} bytes)")
    raise DataError(f"{path}: not a convae code file (neither a .cvc file, magic {MAGIC!r}, nor an .npz)")
