"""Run an exported convae model with onnxruntime, numpy and Pillow only: no torch.

This is what a deployment needs: ``pip install onnxruntime pillow numpy`` and this one
module (it imports nothing of convae that needs torch). ``convae export`` writes the file;
its ``metadata_props`` say what the graph is (the run's digest, preset, input shape, task,
and for detectors the score kind and the threshold that is also a constant inside the
graph), so a file carries everything it needs and cannot be paired with the wrong run.

    from convae.runtime import Exported
    detector = Exported.load("detector.onnx")
    for path, result in zip(paths, detector.detect(paths)):
        print(path, result["score"], result["verdict"])

Images are read as the run's own verbs read them: colour is converted with Pillow's luma
(or gray replicated), and an image of another size is resized with Pillow's antialiased
bilinear filter to the run's H×W (image-to-image outputs are resized back to the file's
own size). torch's resize is an antialiased bilinear filter too, but the two may differ by
a gray level; at the run's own size both engines see the very same pixels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from convae.core.decode import BadImage, decode_image, gray_from_rgb
from convae.core.errors import ConvaeError

#: metadata_props keys every exported file carries.
FORMAT = "convae.format"
FORMAT_VERSION = "1"
VERSION, DIGEST, PRESET, SHAPE, TASK, WHAT = (
    "convae.version", "convae.run_digest", "convae.preset", "convae.input_shape", "convae.task", "convae.what",
)
SCORE, THRESHOLD, HEATMAP_SCALE, CLASSES, OUTPUTS = (
    "convae.score", "convae.threshold", "convae.heatmap_scale", "convae.classes", "convae.outputs",
)
#: A detect graph's pixel threshold: a pixel of the map above it is drawn as predicted defect.
PIXEL_THRESHOLD = "convae.pixel_threshold"
#: An inspect run's detect graph whose discriminator sees the reconstruction clamped to [0, 1], as
#: ``convae detect`` has since 2026-12-07 (convae.models.draem.DraemModel.defect_map); files exported
#: before lack it, and their maps can differ from detect's.
CLAMPED = "convae.clamped_reconstruction"
KINDS = ("reconstruct", "encode", "decode", "detect", "classify")
INPUT = "images"


class Exported:
    """One exported graph and what its metadata says about it."""

    def __init__(self, path: Path, session: Any, metadata: dict[str, str]) -> None:
        self.path = path
        self.session = session
        self.metadata = metadata

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, threads: int | None = None) -> "Exported":
        """Open ``path``; a missing, corrupt or foreign file is one ConvaeError naming it."""
        path = Path(path)
        if not path.is_file():
            raise ConvaeError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConvaeError("running an exported model needs onnxruntime: pip install onnxruntime "
                              "(or pip install 'convae[export]')") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's own warnings are not the user's business
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ConvaeError(f"{path}: not a readable ONNX model ({first[:200]})") from None
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        if metadata.get(FORMAT) != FORMAT_VERSION:
            raise ConvaeError(f"{path}: not a file made by `convae export` (no convae metadata); export the run "
                              "with `convae export RUN --out FILE.onnx`")
        return cls(path, session, metadata)

    # -- what the file is ---------------------------------------------------------------
    @property
    def what(self) -> str:
        return self.metadata[WHAT]

    @property
    def task(self) -> str:
        return self.metadata.get(TASK, "")

    @property
    def digest(self) -> str:
        return self.metadata[DIGEST]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = (int(v) for v in self.metadata[SHAPE].split("x"))
        return c, h, w

    @property
    def threshold(self) -> float | None:
        return float(self.metadata[THRESHOLD]) if THRESHOLD in self.metadata else None

    @property
    def score_kind(self) -> str | None:
        return self.metadata.get(SCORE)

    @property
    def heatmap_scale(self) -> float | None:
        return float(self.metadata[HEATMAP_SCALE]) if HEATMAP_SCALE in self.metadata else None

    @property
    def pixel_threshold(self) -> float | None:
        return float(self.metadata[PIXEL_THRESHOLD]) if PIXEL_THRESHOLD in self.metadata else None

    @property
    def classes(self) -> list[str]:
        return list(json.loads(self.metadata.get(CLASSES, "[]")))

    def require(self, what: str, verb: str) -> None:
        """Refuse a file of another kind than ``verb`` runs, naming the export that would fit."""
        if self.what != what:
            raise ConvaeError(f"{self.path}: an exported {self.what} graph; {verb} needs one made by "
                              f"`convae export RUN --what {what}`")

    # -- running it ---------------------------------------------------------------------
    def run(self, inputs: np.ndarray | dict[str, np.ndarray], batch_size: int = 256) -> dict[str, np.ndarray]:
        """Every output of the graph, by name, for float32 inputs (batched along the first axis)."""
        feeds = inputs if isinstance(inputs, dict) else {INPUT: inputs}
        names = [o.name for o in self.session.get_outputs()]
        count = len(next(iter(feeds.values())))
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for start in range(0, max(count, 1), batch_size):
            chunk = {k: np.ascontiguousarray(v[start:start + batch_size]) for k, v in feeds.items()}
            for name, value in zip(names, self.session.run(names, chunk)):
                parts[name].append(value)
        return {name: np.concatenate(values) for name, values in parts.items()}

    def read(self, path: str | os.PathLike[str]) -> tuple[np.ndarray, str, tuple[int, int]]:
        """(float32 C×H×W in the graph's input shape, what was converted, the file's own H×W)."""
        return read_image(path, self.input_shape)

    def detect(self, paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
        """``{"score", "verdict", "anomalous", "map", "reconstruction", "note"}`` per file (or ``{"error"}``)."""
        self.require("detect", "detect")
        return self._per_file(paths, self._detect_batch)

    def _detect_batch(self, x: np.ndarray) -> list[dict[str, Any]]:
        out = self.run(x)
        return [{"score": float(out["score"][i]), "anomalous": bool(out["anomalous"][i]),
                 "verdict": "anomalous" if bool(out["anomalous"][i]) else "normal",
                 "map": out["anomaly_map"][i], "reconstruction": out["reconstruction"][i]} for i in range(len(x))]

    def restore(self, path: str | os.PathLike[str]) -> tuple[np.ndarray, str]:
        """The reconstruct graph's output for one file at the file's own size (float32 C×H×W), and a note."""
        self.require("reconstruct", "reconstruct")
        x, note, (h, w) = self.read(path)
        out = np.clip(self.run(x[None])["reconstruction"][0], 0.0, 1.0)
        if out.shape[-2:] != (h, w):
            out = resize_float(out, (h, w))
            extra = f"resized back to {h}×{w}"
            note = f"{note}; {extra}" if note else extra
        return out, note

    def predict(self, paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
        """``{"label", "class_index", "probability", "probabilities"}`` per file (or ``{"error"}``)."""
        self.require("classify", "classify predict")
        return self._per_file(paths, self._predict_batch)

    def _predict_batch(self, x: np.ndarray) -> list[dict[str, Any]]:
        logits = self.run(x)["logits"].astype(np.float64)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        classes = self.classes or [str(i) for i in range(probs.shape[1])]
        results = []
        for p in probs:
            index = int(p.argmax())
            results.append({"label": classes[index], "class_index": index, "probability": float(p[index]),
                            "probabilities": {name: float(v) for name, v in zip(classes, p)}})
        return results

    def _per_file(self, paths: Sequence[str | os.PathLike[str]], batch: Any, size: int = 256) -> list[dict[str, Any]]:
        """Read each file (a bad one gets ``{"error"}`` and the rest go on), then run them in batches."""
        results: list[dict[str, Any]] = []
        readable: list[tuple[dict[str, Any], np.ndarray]] = []
        for path in paths:
            entry: dict[str, Any] = {"path": str(path)}
            results.append(entry)
            try:
                x, entry["note"], _ = self.read(path)
                readable.append((entry, x))
            except ConvaeError as error:
                entry["error"] = str(error).removeprefix(f"{path}: ")
        for start in range(0, len(readable), size):
            chunk = readable[start:start + size]
            for (entry, _), found in zip(chunk, batch(np.stack([x for _, x in chunk]))):
                entry.update(found)
        return results


def read_image(path: str | os.PathLike[str], input_shape: Iterable[int]) -> tuple[np.ndarray, str, tuple[int, int]]:
    """One file as float32 C×H×W in [0, 1] of ``input_shape``, what was converted, and its own H×W."""
    channels, height, width = (int(v) for v in input_shape)
    if not Path(path).is_file():
        raise ConvaeError(f"{path}: {'not a file' if Path(path).exists() else 'no such file'}")
    try:
        array, colour = decode_image(path)
    except BadImage as error:
        raise ConvaeError(f"{path}: not a readable image ({error})") from None
    except OSError as error:
        raise ConvaeError(f"{path}: {error.strerror or error}") from None
    notes = []
    if colour and channels == 1:
        array, _ = gray_from_rgb(array), notes.append("RGB converted to gray")
    elif not colour and channels == 3:
        array, _ = np.repeat(array[..., None], 3, axis=2), notes.append("gray converted to RGB")
    own = (int(array.shape[0]), int(array.shape[1]))
    if own != (height, width):
        from PIL import Image

        array = np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR))
        notes.append(f"resized {own[0]}×{own[1]} → {height}×{width}")
    x = array.astype(np.float32) / 255.0
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    return np.ascontiguousarray(x), "; ".join(notes), own


def resize_float(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 C×H×W → C×h×w, each channel with Pillow's bilinear filter (mode F)."""
    from PIL import Image

    h, w = size
    return np.stack([np.asarray(Image.fromarray(channel).resize((w, h), Image.Resampling.BILINEAR))
                     for channel in image.astype(np.float32)])
