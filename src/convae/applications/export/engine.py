"""``--engine onnx``: an exported file standing in for the run's torch model inside the verbs.

The verbs keep reading files, converting and resizing them, naming outputs and reporting
bad files exactly as with torch; only the model call goes to onnxruntime (through
convae.runtime). The file must have been exported from this very run (its digest is the
run's) and as the kind the verb needs; an inspect run's detector, by a convae that clamps the
reconstruction its discriminator sees, as detect does (runtime.CLAMPED).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from convae import runtime
from convae.core.errors import ConvaeError
from convae.run import Run


class OnnxModel:
    """Called like the torch model: float N×C×H×W tensor in, the graph's main output as a tensor out."""

    def __init__(self, exported: runtime.Exported) -> None:
        self.exported = exported
        self.input_shape = exported.input_shape
        self.main_output = {"classify": "logits", "detect": "score"}.get(exported.what, "reconstruction")

    def _feed(self, x: torch.Tensor) -> np.ndarray:
        if tuple(x.shape[1:]) != self.input_shape:
            # the graph takes the run's own shape; callers that probe other sizes resize instead
            raise ValueError(f"{self.exported.path} takes {'x'.join(map(str, self.input_shape))} images, "
                             f"not {'x'.join(map(str, x.shape[1:]))}")
        return x.detach().float().cpu().numpy()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.exported.run(self._feed(x))[self.main_output])

    def detect(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scores N, anomaly maps N×H×W, reconstructions N×C×H×W), as anomaly.error_maps gives them."""
        found = self.exported.run(self._feed(x))
        return (torch.from_numpy(found["score"]), torch.from_numpy(found["anomaly_map"]),
                torch.from_numpy(found["reconstruction"]))


def open_exported(run: Run, path: str | Path, what: str, verb: str) -> OnnxModel:
    """``path`` as a model for ``verb`` on ``run``: a file exported from this run as ``what``, or one line why not."""
    exported = runtime.Exported.load(path)
    exported.require(what, verb)
    if exported.digest != run.digest:
        raise ConvaeError(f"{path}: exported from another run's weights ({exported.digest[:12]}), not {run.path}'s "
                          f"({run.digest[:12]}); export this run with `convae export {run.path} --what {what} "
                          f"--out FILE.onnx`")
    if what == "detect" and exported.task == "inspect" and exported.metadata.get(runtime.CLAMPED) != "1":
        raise ConvaeError(f"{path}: exported before convae clamped the reconstruction an inspect run's discriminator "
                          f"sees, so its maps and scores can differ from `convae detect`'s; export it again with "
                          f"`convae export {run.path} --what detect --out FILE.onnx`")
    return OnnxModel(exported)


def open_engine(run: Run, engine: str | None, onnx: Path | None, what: str, verb: str) -> OnnxModel | None:
    """What ``--engine``/``--onnx`` ask for: None for the torch model, else the exported file
    (``--onnx`` alone means onnx) checked to be this run's, exported as ``what``."""
    if engine not in (None, "torch", "onnx"):
        raise ConvaeError(f"--engine must be torch or onnx, got {engine!r}")
    if engine == "onnx" and onnx is None:
        raise ConvaeError("--engine onnx needs the exported file: --onnx FILE.onnx (made by `convae export`)")
    if engine == "torch" and onnx is not None:
        raise ConvaeError("--onnx runs an exported file with onnxruntime; it cannot go with --engine torch")
    return open_exported(run, onnx, what, verb) if onnx is not None else None
