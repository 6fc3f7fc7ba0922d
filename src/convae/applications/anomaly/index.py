"""How far an image's code lies from the codes of the normal training images.

Why this exists: a convolutional autoencoder generalises. Trained on T-shirts it rebuilds a
coat or a dress almost as well as a T-shirt, so its reconstruction error misses such
anomalies (on Fashion-MNIST the ``conv`` preset's 1 − SSIM ranked them worse than PCA's).
Their codes, though, land away from the codes of every normal image. The ``hybrid``
anomaly score (:mod:`convae.applications.anomaly.scores`) adds that distance to 1 − SSIM.

The index holds the codes of the run's normal training images (at most ``MAX_CODES``),
each code dimension scaled by its spread over those images, and the distance of a code
is its mean Euclidean distance to the ``NEIGHBOURS`` nearest of them (scikit-learn's
``NearestNeighbors``). Both parts of the hybrid score are standardised by their mean and
standard deviation on the normal *validation* images, so neither dominates by its units,
and the code distance is weighted by ``CODE_WEIGHT``. ``NEIGHBOURS`` and ``CODE_WEIGHT``
were chosen on training-split data only (see benchmarks/anomaly.py).

The index is a pure function of the weights and the training data, so it is cached in
``RUN_DIR/code-index.npz`` together with the weights' checksum and rebuilt when the
weights change (a resumed or retrained run).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convae.core.atomic import atomic_write_bytes
from convae.core.errors import ConvaeError
from convae.data import Batches
from convae.run import tensors_checksum

INDEX_FILE = "code-index.npz"
NEIGHBOURS = 20
CODE_WEIGHT = 2.0
MAX_CODES = 20_000
FORMAT_VERSION = 1


def flat_codes(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's code of a float batch, one row per image."""
    return tensor_code(model, x).flatten(1).float()


def tensor_code(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's code of a float batch as it comes out of the encoder (one tensor, or an error)."""
    encode = getattr(model, "encode", None)
    if encode is None:
        raise ConvaeError("the hybrid score needs a model with an encoder (encode); use ssim, mse or l1")
    code = encode(x)
    if not isinstance(code, torch.Tensor):
        raise ConvaeError(
            f"the hybrid score needs a code that is one tensor; {type(model).__name__} codes are "
            f"{type(code).__name__} (pooling switches), so use ssim, mse or l1"
        )
    return code


@torch.no_grad()
def encode_images(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 256,
                  device: torch.device | str = "cpu") -> np.ndarray:
    model.eval()
    parts = [flat_codes(model, x).cpu() for x in Batches(images, batch_size, shuffle=False, seed=0, device=device)]
    return torch.cat(parts).numpy().astype(np.float32) if parts else np.zeros((0, 0), np.float32)


@dataclass
class CodeIndex:
    """Normal codes plus the statistics that turn (1 − SSIM, code distance) into one score."""

    codes: np.ndarray  # N×D, already scaled
    center: np.ndarray  # D
    scale: np.ndarray  # D
    neighbours: int = NEIGHBOURS
    weight: float = CODE_WEIGHT
    ssim_mean: float = 0.0
    ssim_std: float = 1.0
    distance_mean: float = 0.0
    distance_std: float = 1.0
    weights_sha256: str = ""

    def __post_init__(self) -> None:
        from sklearn.neighbors import NearestNeighbors

        if len(self.codes) == 0:
            raise ConvaeError("the code index needs at least one normal training image")
        self.neighbours = int(min(self.neighbours, len(self.codes)))
        self._search = NearestNeighbors(n_neighbors=self.neighbours).fit(self.codes)

    def distances(self, codes: np.ndarray | torch.Tensor) -> np.ndarray:
        """Mean distance of each code to its nearest normal codes (float64)."""
        if isinstance(codes, torch.Tensor):
            codes = codes.detach().cpu().numpy()
        codes = np.asarray(codes, dtype=np.float32)
        if codes.ndim != 2 or codes.shape[1] != self.codes.shape[1]:
            raise ConvaeError(f"codes of shape {codes.shape} do not fit the index's {self.codes.shape[1]} dimensions")
        found, _ = self._search.kneighbors((codes - self.center) / self.scale)
        return found.mean(1).astype(np.float64)

    def combine(self, ssim_scores: np.ndarray | torch.Tensor, distances: np.ndarray | torch.Tensor
                ) -> np.ndarray | torch.Tensor:
        """The hybrid score: standardised 1 − SSIM plus ``weight`` × standardised code distance.

        float64 arrays, or tensors: the exported detect graph (convae.applications.export)
        computes the same formula inside the graph."""
        if not isinstance(ssim_scores, torch.Tensor):
            ssim_scores, distances = np.asarray(ssim_scores, np.float64), np.asarray(distances, np.float64)
        ssim_part = (ssim_scores - self.ssim_mean) / self.ssim_std
        code_part = (distances - self.distance_mean) / self.distance_std
        return ssim_part + self.weight * code_part

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, version=FORMAT_VERSION, codes=self.codes, center=self.center, scale=self.scale,
                 neighbours=self.neighbours, weight=self.weight, ssim_mean=self.ssim_mean, ssim_std=self.ssim_std,
                 distance_mean=self.distance_mean, distance_std=self.distance_std,
                 weights_sha256=np.array(self.weights_sha256))
        return buffer.getvalue()

    @classmethod
    def read(cls, path: Path) -> "CodeIndex":
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["version"]) != FORMAT_VERSION:
                    raise ConvaeError(f"{path}: code index version {int(data['version'])}, expected {FORMAT_VERSION}")
                scalars = {key: float(data[key]) for key in ("weight", "ssim_mean", "ssim_std", "distance_mean",
                                                              "distance_std")}
                arrays = {key: np.asarray(data[key]) for key in ("codes", "center", "scale")}
                neighbours = int(data["neighbours"])
                weights = str(data["weights_sha256"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError,
                NotImplementedError) as error:
            raise ConvaeError(f"{path}: not a readable code index ({error})") from None
        for key, value in [*scalars.items(), *arrays.items()]:
            if not np.isfinite(value).all():
                raise ConvaeError(f"{path}: {key} holds NaN or Inf; the index is rebuilt from the weights")
        for key in ("ssim_std", "distance_std"):
            if scalars[key] <= 0:
                raise ConvaeError(f"{path}: {key} must be positive, got {scalars[key]}")
        if neighbours < 1 or (arrays["scale"] <= 0).any():
            raise ConvaeError(f"{path}: neighbours and scale must be positive")
        return cls(**arrays, neighbours=neighbours, weights_sha256=weights, **scalars)


def _spread(values: np.ndarray, what: str) -> float:
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    if not np.isfinite(spread):
        raise ConvaeError(f"cannot standardise the {what} of the validation images: NaN or Inf")
    return spread if spread > 0 else 1.0


def build_code_index(
    model: torch.nn.Module,
    normal_images: torch.Tensor,
    validation_images: torch.Tensor,
    validation_ssim: np.ndarray,
    *,
    neighbours: int = NEIGHBOURS,
    weight: float = CODE_WEIGHT,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> CodeIndex:
    """Index the codes of ``normal_images`` (the training images, never the validation ones).

    ``validation_ssim`` are the 1 − SSIM scores of ``validation_images``: held-out normals
    whose two score parts set the standardisation.
    """
    if len(normal_images) > MAX_CODES:
        keep = torch.randperm(len(normal_images), generator=torch.Generator().manual_seed(seed))[:MAX_CODES]
        normal_images = normal_images[keep.sort().values]
    codes = encode_images(model, normal_images, batch_size=batch_size, device=device)
    if len(codes) == 0:
        raise ConvaeError("the code index needs at least one normal training image")
    center = codes.mean(0)
    scale = codes.std(0)
    scale = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
    index = CodeIndex(codes=(codes - center) / scale, center=center, scale=scale, neighbours=neighbours,
                      weight=weight, weights_sha256=tensors_checksum(model.state_dict()))
    distances = index.distances(encode_images(model, validation_images, batch_size=batch_size, device=device))
    index.ssim_mean, index.ssim_std = float(np.mean(validation_ssim)), _spread(validation_ssim, "1 - SSIM scores")
    index.distance_mean, index.distance_std = float(distances.mean()), _spread(distances, "code distances")
    return index


def save_code_index(run_dir: Path, index: CodeIndex) -> Path:
    path = Path(run_dir) / INDEX_FILE
    atomic_write_bytes(path, index.to_bytes())
    return path


def cached_code_index(run_dir: Path, model: torch.nn.Module) -> CodeIndex | None:
    """The stored index when it was built from exactly these weights, else None.

    An unreadable file counts as stale: the index is derived data, rebuilt and rewritten
    (atomically) from the weights and the training images.
    """
    path = Path(run_dir) / INDEX_FILE
    if not path.exists():
        return None
    try:
        index = CodeIndex.read(path)
    except ConvaeError:
        return None
    return index if index.weights_sha256 == tensors_checksum(model.state_dict()) else None

