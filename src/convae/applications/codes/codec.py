"""One image in, one bitstream out, and back: the codec runs' encoder and decoder.

What must be exact is everything the decoder recomputes: the integer tables
(entropy_tables), the hyperprior's scales that pick a table for each latent, and the
synthesis that turns integers back into pixels. Those run on the CPU in float64 with one
thread, wherever the rest of the run is (CompressAI's run-to-run differences, its issue
#320, come from doing them in float32 on whatever device is at hand). Only the analysis
transform, whose output is rounded to integers and written down, may run on a GPU.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from functools import cached_property
from typing import Iterator

import numpy as np
import torch

from convae.applications.codes.bitstream import ImageRecord, SymbolReader, SymbolWriter
from convae.applications.codes.entropy_tables import (
    GaussianTables,
    SymbolTable,
    factorized_tables,
    gaussian_tables,
)
from convae.core.errors import DataError
from convae.models.autoencoder import pad_to_multiple
from convae.models.codec import MULTIPLE, Codec, hyper_latent_size, latent_size

#: Large images go through the transforms in bands of this many latent rows (512 pixels), each
#: with HALO latent rows of context on both sides that are computed and dropped: every layer
#: looks at most one or two rows away, so the kept rows are those of the whole image, and
#: memory stays that of one band (a 4000×3000 photo whole would need about 10 GB in float64).
BAND, HALO = 32, 4


def in_bands(transform, x: torch.Tensor, rows_in: int, rows_out: int) -> torch.Tensor:
    """``transform`` over bands of ``x``'s rows; ``rows_in``/``rows_out``: rows per latent row."""
    total = x.shape[-2] // rows_in
    if total <= BAND + 2 * HALO:
        return transform(x)
    parts = []
    for start in range(0, total, BAND):
        low, high = max(0, start - HALO), min(total, start + BAND + HALO)
        out = transform(x[..., low * rows_in: high * rows_in, :])
        keep = out[..., (start - low) * rows_out: (min(start + BAND, total) - low) * rows_out, :]
        parts.append(keep)
    return torch.cat(parts, dim=-2)


@contextmanager
def one_thread() -> Iterator[None]:
    """Intra-op threads split reductions differently; the decoder's arithmetic must not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ImageCodec:
    """A trained codec's encoder and decoder, bound to its weights' digest."""

    def __init__(self, model: Codec, digest: str, device: torch.device | str = "cpu") -> None:
        self.model, self.digest, self.device = model.eval(), digest, torch.device(device)
        self.digest_prefix = bytes.fromhex(digest[:8])

    @cached_property
    def exact(self) -> Codec:
        """The float64 CPU copy that computes everything the decoder recomputes."""
        return copy.deepcopy(self.model).to("cpu", torch.float64).eval()

    @cached_property
    def density_tables(self) -> list[SymbolTable]:
        with one_thread():
            return factorized_tables(self.model.density)

    @cached_property
    def scale_tables(self) -> GaussianTables:
        return gaussian_tables()

    # -- encoding ------------------------------------------------------------------------
    @torch.no_grad()
    def latents(self, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """The rounded latent ``y`` (and the hyperprior's ``z``) of one uint8 C×H×W image."""
        x = pad_to_multiple(image.to(self.device).float().div(255).unsqueeze(0), MULTIPLE)
        y = in_bands(self.model.encoder, x, MULTIPLE, 1)
        z = self.model.hyper_latent(y) if self.model.hyper else None
        as_int = lambda t: torch.round(t).to("cpu", torch.int64)[0].numpy()  # noqa: E731
        return as_int(y), (as_int(z) if z is not None else None)

    def encode(self, image: torch.Tensor) -> tuple[bytes, float]:
        """(the one-image file, the model's own estimate of its payload in bits)."""
        _, height, width = image.shape
        y, z = self.latents(image)
        writer = SymbolWriter()
        estimate = 0.0
        if z is None:
            groups = self._channel_groups(y)
        else:
            z_groups = self._channel_groups(z)
            writer.write(z_groups)
            estimate += sum(float(t.bits(v).sum()) for v, t in z_groups)
            order, counts = self._scale_groups(self._indexes(z, y.shape[1:]))
            groups = list(zip(np.split(y.ravel()[order], np.cumsum(counts)[:-1]), self.scale_tables.tables))
        writer.write(groups)
        estimate += sum(float(t.bits(v).sum()) for v, t in groups)
        record = ImageRecord(height, width, self.digest_prefix, writer.payload())
        return record.to_bytes(), estimate

    def _channel_groups(self, latent: np.ndarray) -> list[tuple[np.ndarray, SymbolTable]]:
        return [(latent[c].ravel(), table) for c, table in enumerate(self.density_tables)]

    def _indexes(self, z: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        with one_thread(), torch.no_grad():
            z_hat = torch.from_numpy(z).to(torch.float64).unsqueeze(0)
            scales = self.exact.scales(z_hat, (int(size[0]), int(size[1])))[0].numpy()
        return self.scale_tables.indexes(scales)

    def _scale_groups(self, indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(y's elements in coding order, how many each scale table codes): grouped by table, and in
        raster order within a group (a stable sort), the same on both sides of the stream."""
        flat = indexes.ravel()
        return np.argsort(flat, kind="stable"), np.bincount(flat, minlength=len(self.scale_tables.tables))

    # -- decoding ------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, data: bytes, name: str) -> torch.Tensor:
        """The uint8 C×H×W image of a one-image file; refuses another run's file in one line."""
        record = ImageRecord.from_bytes(data, name)
        if record.digest != self.digest_prefix:
            raise DataError(f"{name}: was encoded by another model (digest {record.digest.hex()}…, this run's is "
                            f"{self.digest[:8]}…); decode it with the run that encoded it")
        rows, cols = latent_size(record.height, record.width)
        latent = int(self.model.decoder[0].in_channels)
        reader = SymbolReader(record.payload)
        try:
            if not self.model.hyper:
                y = self._read_channels(reader, latent, rows, cols)
            else:
                z = self._read_channels(reader, self.model.density.channels, *hyper_latent_size(rows, cols))
                order, counts = self._scale_groups(self._indexes(z, (rows, cols)))
                y = np.zeros(latent * rows * cols, np.int64)
                y[order] = np.concatenate(reader.read(list(zip(counts.tolist(), self.scale_tables.tables))))
                y = y.reshape(latent, rows, cols)
        except (ValueError, RuntimeError, IndexError) as error:
            raise DataError(f"{name}: its bitstream could not be decoded ({error})") from None
        return self._synthesis(y, record.height, record.width)

    def _read_channels(self, reader: SymbolReader, channels: int, rows: int, cols: int) -> np.ndarray:
        parts = reader.read([(rows * cols, table) for table in self.density_tables[:channels]])
        return np.stack(parts).reshape(channels, rows, cols)

    def _synthesis(self, y: np.ndarray, height: int, width: int) -> torch.Tensor:
        with one_thread():
            y_hat = torch.from_numpy(y).to(torch.float64).unsqueeze(0)
            x_hat = in_bands(self.exact.decoder, y_hat, 1, MULTIPLE)[0, :, :height, :width]
        return torch.round(x_hat.clamp(0, 1) * 255).to(torch.uint8)
