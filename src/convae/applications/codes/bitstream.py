"""Entropy-coded bitstreams: symbols through a range coder, and the bytes of a code file.

The coder is ``constriction``'s range coder (Bamler, "Understanding Entropy Coding With
Asymmetric Numeral Systems (ANS): a Statistician's Perspective", 2022; github.com/bamler-lab/
constriction), chosen over CompressAI's bundled rANS for the reasons in docs/codes.md: it
is a maintained standalone package with wheels for every platform, no numpy < 2 pin and no
torch-geometric. A range coder is a queue: symbols come out in the order they went in,
so the hyperprior's side information (``z``) and the latent it predicts (``y``) share one
stream, decoded phase by phase.

Each phase codes groups of symbols that share a :class:`SymbolTable`, in one vectorised call
per group; a value outside its table's support is sent as the escape symbol and then, after
the group, as a raw 16-bit number (values beyond ±32767 are clipped there: no trained latent
comes near).

One image's file (``.cvc``, version 3) holds 16 bytes beyond the coded payload::

    offset size  field
    0      3     magic b"\\x89CV" (shared with convae's other code files)
    3      1     version: 3
    4      2     image height (uint16, little-endian)
    6      2     image width
    8      4     the first 4 bytes of the run's weights digest
    12     ...   the range coder's output (trailing zero bytes dropped; the reader restores them)
    end-4  4     CRC-32 (zlib's) of every byte before it

A pack of several (``--out FILE.cvc``, version 4) is ``\\x89CV``, 4, the image count (uint32),
then per image its name (uint16 length, UTF-8) and its one-image file (uint32 length, bytes),
and a CRC-32 of it all.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from convae.applications.codes.entropy_tables import SymbolTable
from convae.core.errors import DataError

MAGIC = b"\x89CV"
IMAGE_VERSION = 3
PACK_VERSION = 4
_HEADER = struct.Struct("<3sBHH4s")
#: Bytes a one-image file carries beyond its payload: the header and the CRC-32.
OVERHEAD = _HEADER.size + 4
RAW_BITS = 16
_RAW_HALF = 1 << (RAW_BITS - 1)


class SymbolWriter:
    """Codes groups of integer values, each group under its own table, phase after phase."""

    def __init__(self) -> None:
        import constriction

        self._stream = constriction.stream.queue.RangeEncoder()
        self._raw = constriction.stream.model.Uniform(1 << RAW_BITS)

    def write(self, groups: list[tuple[np.ndarray, SymbolTable]]) -> None:
        escapes = []
        for values, table in groups:
            values = np.asarray(values, dtype=np.int64)
            symbols = values - table.offset
            escaped = (symbols < 0) | (symbols >= table.support)
            symbols[escaped] = table.support
            if len(symbols):
                self._stream.encode(symbols.astype(np.int32), table.model())
            escapes.append(values[escaped])
        raw = np.concatenate(escapes) if escapes else np.zeros(0, np.int64)
        if len(raw):
            self._stream.encode((np.clip(raw, 1 - _RAW_HALF, _RAW_HALF - 1) + _RAW_HALF).astype(np.int32), self._raw)

    def payload(self) -> bytes:
        """The coder's 32-bit words as bytes, trailing zero bytes dropped: the decoder reads what
        is missing as zeros (checked on 20,000 random streams, a tenth of them ending in a zero word)."""
        return self._stream.get_compressed().astype("<u4").tobytes().rstrip(b"\x00")


class SymbolReader:
    """Reads back what a :class:`SymbolWriter` wrote, given the same groups' sizes and tables."""

    def __init__(self, payload: bytes) -> None:
        import constriction

        padded = payload + b"\x00" * (-len(payload) % 4)
        self._stream = constriction.stream.queue.RangeDecoder(np.frombuffer(padded, dtype="<u4").copy())
        self._raw = constriction.stream.model.Uniform(1 << RAW_BITS)

    def read(self, groups: list[tuple[int, SymbolTable]]) -> list[np.ndarray]:
        decoded = [np.asarray(self._stream.decode(table.model(), count), dtype=np.int64) if count
                   else np.zeros(0, np.int64) for count, table in groups]
        escaped = [symbols == table.support for symbols, (_, table) in zip(decoded, groups)]
        total = sum(int(e.sum()) for e in escaped)
        raw = (np.asarray(self._stream.decode(self._raw, total), dtype=np.int64) - _RAW_HALF if total
               else np.zeros(0, np.int64))
        values, used = [], 0
        for symbols, hit, (_, table) in zip(decoded, escaped, groups):
            out = symbols + table.offset
            out[hit] = raw[used: used + int(hit.sum())]
            used += int(hit.sum())
            values.append(out)
        return values


@dataclass(frozen=True)
class ImageRecord:
    """One coded image: its size, whose model coded it, and the coded payload."""

    height: int
    width: int
    digest: bytes  # the first 4 bytes of the weights digest
    payload: bytes

    def to_bytes(self) -> bytes:
        if not (0 < self.height < 1 << 16 and 0 < self.width < 1 << 16):
            raise DataError(f"a {self.height}×{self.width} image is too large for a code file (at most 65535 a side)")
        body = _HEADER.pack(MAGIC, IMAGE_VERSION, self.height, self.width, self.digest) + self.payload
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> "ImageRecord":
        _check_frame(data, name, IMAGE_VERSION, OVERHEAD)
        _, _, height, width, digest = _HEADER.unpack_from(data)
        return cls(height, width, digest, data[_HEADER.size:-4])


def _check_frame(data: bytes, name: str, version: int, minimum: int) -> None:
    """Magic, version and checksum, each refused in one line naming the file."""
    if not data.startswith(MAGIC):
        raise DataError(f"{name}: not a convae code file")
    if len(data) < minimum:
        raise DataError(f"{name}: truncated ({len(data)} bytes)")
    if data[3] != version:
        what = {IMAGE_VERSION: "a one-image code file", PACK_VERSION: "a pack of code files"}.get(
            data[3], f"a code file of version {data[3]}")
        raise DataError(f"{name}: is {what}, not what was expected here")
    if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise DataError(f"{name}: damaged or truncated (its checksum does not match); it cannot be decoded")


def code_file_kind(data: bytes) -> int | None:
    """IMAGE_VERSION, PACK_VERSION, another version number, or None for a file that is no code file."""
    return data[3] if data.startswith(MAGIC) and len(data) > 3 else None


def pack(records: list[tuple[str, bytes]]) -> bytes:
    """Several one-image files, with their names, in one file."""
    parts = [MAGIC, bytes([PACK_VERSION]), struct.pack("<I", len(records))]
    for name, record in records:
        encoded = name.encode("utf-8")
        parts += [struct.pack("<H", len(encoded)), encoded, struct.pack("<I", len(record)), record]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes, name: str) -> list[tuple[str, bytes]]:
    _check_frame(data, name, PACK_VERSION, 12)
    count, offset, records = struct.unpack_from("<I", data, 4)[0], 8, []
    try:
        for _ in range(count):
            (length,) = struct.unpack_from("<H", data, offset)
            entry = data[offset + 2: offset + 2 + length].decode("utf-8")
            (size,) = struct.unpack_from("<I", data, offset + 2 + length)
            offset += 6 + length
            records.append((entry, data[offset: offset + size]))
            offset += size
    except (struct.error, UnicodeDecodeError):
        raise DataError(f"{name}: its index of images is damaged") from None
    if offset != len(data) - 4:
        raise DataError(f"{name}: its index of images is damaged")
    return records
