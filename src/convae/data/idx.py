"""Read IDX files (the MNIST / Fashion-MNIST format), gzipped or raw, with NumPy.

We parse them ourselves instead of going through torchvision because torchvision unpacks
the ``.gz`` next to the original, which fails (or pollutes) a read-only data folder.

Format: two zero bytes, a dtype byte (0x08 = uint8), a byte with the number of dimensions,
then one big-endian uint32 per dimension, then the payload in C order.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from convae.core.errors import DataError

#: Refuse headers that declare more than this many payload bytes (a corrupt or hostile
#: header must not make us allocate gigabytes before noticing the file is short).
MAX_PAYLOAD_BYTES = 2**31

_DTYPE_NAMES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
_GZIP_MAGIC = b"\x1f\x8b"
_READ_ERRORS = (OSError, EOFError, zlib.error)


def _open(path: Path) -> BinaryIO:
    """Open raw or gzip data, deciding by the first two bytes rather than the file name."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an IDX file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if head == _GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _read_exact(f: BinaryIO, n: int, path: Path) -> tuple[bytearray, int]:
    """Read up to n bytes into a writable buffer; return (buffer, bytes actually read)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    try:
        while got < n:
            k = f.readinto(view[got:])  # type: ignore[attr-defined]
            if not k:
                break
            got += k
    except _READ_ERRORS as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({_reason(e)})") from None
    return buf, got


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _magic_hint(magic: int) -> str:
    """Say what a wrong magic number looks like, when it looks like anything we know."""
    if magic >> 16 == 0 and (magic >> 8) & 0xFF in _DTYPE_NAMES:
        dtype = _DTYPE_NAMES[(magic >> 8) & 0xFF]
        return f"; it looks like a {magic & 0xFF}-D {dtype} IDX file"
    return ""


def _read_idx(path: str | os.PathLike[str], expected_magic: int, what: str) -> np.ndarray:
    """Parse one IDX file whose magic number must equal ``expected_magic``."""
    p = Path(path)
    expected_ndim = expected_magic & 0xFF
    with _open(p) as f:
        try:
            header = f.read(4)
        except _READ_ERRORS as e:
            raise DataError(f"{p}: corrupt gzip data ({_reason(e)})") from None
        if len(header) < 4:
            raise DataError(f"{p}: truncated: {len(header)} bytes, too short for an IDX header")
        (magic,) = struct.unpack(">I", header)
        if magic != expected_magic:
            raise DataError(
                f"{p}: wrong magic number 0x{magic:08X} (expected 0x{expected_magic:08X} for {what})"
                + _magic_hint(magic)
            )
        try:
            dims_raw = f.read(4 * expected_ndim)
        except _READ_ERRORS as e:
            raise DataError(f"{p}: corrupt gzip data ({_reason(e)})") from None
        if len(dims_raw) < 4 * expected_ndim:
            raise DataError(f"{p}: truncated: header ends inside the dimension sizes")
        dims = struct.unpack(f">{expected_ndim}I", dims_raw)
        shape_txt = "×".join(str(d) for d in dims)
        if any(d == 0 for d in dims):
            raise DataError(f"{p}: header declares an empty array ({shape_txt})")
        n_bytes = math.prod(dims)  # Python ints: numpy int64 wraps (2**31 cubed reads as 0)
        if n_bytes > MAX_PAYLOAD_BYTES:
            raise DataError(
                f"{p}: header declares {shape_txt} = {n_bytes} bytes, more than the "
                f"{MAX_PAYLOAD_BYTES}-byte limit; the header is probably corrupt"
            )
        buf, got = _read_exact(f, n_bytes, p)
        if got < n_bytes:
            raise DataError(
                f"{p}: truncated: header says {shape_txt} = {n_bytes} bytes, file has {got}"
            )
        try:
            extra = f.read(1)
        except _READ_ERRORS as e:
            raise DataError(f"{p}: corrupt gzip data after the payload ({_reason(e)})") from None
        if extra:
            raise DataError(
                f"{p}: trailing data: header says {shape_txt} = {n_bytes} bytes, file has more"
            )
    return np.frombuffer(buf, dtype=np.uint8).reshape(dims)


def read_idx_images(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an IDX3 uint8 image file into a uint8 tensor N×1×H×W."""
    arr = _read_idx(path, 0x00000803, "IDX uint8 images")
    n, h, w = arr.shape
    return torch.from_numpy(arr).reshape(n, 1, h, w)


def read_idx_labels(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an IDX1 uint8 label file into an int64 tensor N."""
    arr = _read_idx(path, 0x00000801, "IDX uint8 labels")
    return torch.from_numpy(arr).to(torch.int64)
