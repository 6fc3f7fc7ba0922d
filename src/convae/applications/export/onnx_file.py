"""``convae export``: a run's model as one ONNX file, checked against torch before it is written.

The graph contract: one input ``images`` (float32 N×C×H×W in [0, 1], dynamic N; a
``decode`` graph takes ``code`` and any pooling switches instead) and outputs named
``reconstruction``, ``code`` (+ ``switches``), ``anomaly_map``/``score``/``anomalous`` or
``logits`` as the kind requires. The file's ``metadata_props`` carry the convae version,
the run's digest, preset, input shape and task, and for ``detect`` the score kind and the
threshold (which is also a constant inside the graph): nothing a deployment needs lives
in a side file.

Before anything is written, onnxruntime runs the file on seeded images and every output
must match torch's to ``TOLERANCE`` (verdicts exactly); otherwise the export fails and
writes nothing. The exporter is torch's TorchScript-based one (``dynamo=False``): it
traces every preset, MaxUnpool switches included (as a scatter, see
convae.models.blocks.scatter_unpool).
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from convae import __version__, runtime
from convae.applications.anomaly.runs import open_detector_run
from convae.applications.anomaly.scores import HYBRID, run_code_index
from convae.applications.anomaly.threshold import THRESHOLD_FILE, load_threshold
from convae.applications.export.graphs import DecodeGraph, DetectGraph, EncodeGraph, switch_names
from convae.core.atomic import atomic_write_bytes
from convae.core.errors import ConvaeError
from convae.core.outputs import check_output_file
from convae.models import SwitchedCode, code_values
from convae.run import AUTOENCODER, CLASSIFIER, Run

#: Largest |onnxruntime − torch| allowed on any output (float outputs; verdicts must be equal).
TOLERANCE = 1e-4
#: Plus this share of the value: a hybrid score is in standard deviations of the validation
#: scores, and a float32 rounding of the SSIM map grows by 1/std on its way there.
RELATIVE = 1e-5
OPSET = 17
AUTOENCODER_KINDS = ("reconstruct", "encode", "decode", "detect")
CHECK_IMAGES = 8


@dataclass
class Exported:
    path: Path
    what: str
    inputs: list[str]
    outputs: list[str]
    max_diff: float
    size: int
    metadata: dict[str, str] = field(default_factory=dict)


def default_kind(run: Run) -> str:
    return "classify" if run.config.kind == CLASSIFIER else "reconstruct"


def check_kind(run: Run, what: str) -> str:
    """``what`` if this run can be exported as it, else one line saying what it can be."""
    kinds = ("classify",) if run.config.kind == CLASSIFIER else AUTOENCODER_KINDS
    if what not in runtime.KINDS:
        raise ConvaeError(f"--what must be one of {', '.join(runtime.KINDS)}, got {what!r}")
    if what not in kinds:
        raise ConvaeError(f"{run.path}: {'a classifier' if run.config.kind == CLASSIFIER else 'an autoencoder'} run "
                          f"exports as {' or '.join(kinds)}, not {what}")
    return what


def _onnx() -> Any:
    try:
        import onnx
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConvaeError("convae export needs onnx and onnxruntime: pip install 'convae[export]'") from None
    return onnx


def export_run(run_dir: str | Path | Run, out: str | Path, what: str | None = None, *,
               log: Callable[[str], None] | None = None) -> Exported:
    """Export ``run_dir`` as ``what`` (default: reconstruct, or classify for a classifier) to ``out``."""
    run = Run.of(run_dir, verb="convae export")
    what = check_kind(run, what or default_kind(run))
    out = Path(out)
    if out.is_dir():
        raise ConvaeError(f"--out {out}: is a folder; give a file name such as {out / 'model.onnx'}")
    if not out.parent.is_dir():
        raise ConvaeError(f"--out {out}: the folder {out.parent} does not exist")
    check_output_file(out, "--out", "onnx")
    onnx = _onnx()
    metadata = _metadata(run, what)
    graph, inputs, outputs, example, extra = _graph(run, what, log)
    metadata.update(extra)
    metadata[runtime.OUTPUTS] = ",".join(outputs)
    data = _trace(graph, example, inputs, outputs)
    model = onnx.load_from_string(data)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    max_diff = check_parity(data, graph, inputs, outputs, example)
    try:
        atomic_write_bytes(out, data)
    except OSError as error:
        raise ConvaeError(f"--out {out}: cannot write ({error.strerror or error})") from None
    return Exported(out, what, inputs, outputs, max_diff, len(data), metadata)


def _metadata(run: Run, what: str) -> dict[str, str]:
    config = run.config
    data = {
        runtime.FORMAT: runtime.FORMAT_VERSION, runtime.VERSION: __version__, runtime.DIGEST: run.digest,
        runtime.PRESET: config.model_name, runtime.SHAPE: "x".join(map(str, config.input_shape)),
        runtime.TASK: config.task if config.kind == AUTOENCODER else "classify", runtime.WHAT: what,
    }
    if config.kind == CLASSIFIER:
        classes = config.get("classes") or [str(i) for i in range(config["model"]["n_classes"])]
        data[runtime.CLASSES] = json.dumps([str(c) for c in classes])
    if what == "detect" and config.task == "inspect":
        data[runtime.CLAMPED] = "1"
    return data


def seeded_images(shape: tuple[int, ...], count: int = CHECK_IMAGES, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1]: a low-resolution noise field upsampled, plus fine noise."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    coarse = torch.rand(count, c, max(1, h // 4), max(1, w // 4), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(count, c, h, w, generator=g)).clamp(0, 1)


def _graph(run: Run, what: str, log: Callable[[str], None] | None
           ) -> tuple[torch.nn.Module, list[str], list[str], tuple[torch.Tensor, ...], dict[str, str]]:
    """(module, input names, output names, example inputs, extra metadata) for one kind."""
    images = seeded_images(run.config.input_shape)
    if what == "classify":
        return run.model(), [runtime.INPUT], ["logits"], (images,), {}
    if what == "reconstruct":
        return run.model(), [runtime.INPUT], ["reconstruction"], (images,), {}
    model = run.model()
    with torch.no_grad():
        code = model.encode(images)
    switches = list(code.switches) if isinstance(code, SwitchedCode) else []
    names = switch_names(len(switches)) if switches else []
    if what == "encode":
        return EncodeGraph(model), [runtime.INPUT], ["code", *names], (images,), {}
    if what == "decode":
        example = (code_values(code), *(indices for indices, _ in switches))
        return DecodeGraph(model, [size for _, size in switches]), ["code", *names], ["reconstruction"], example, {}
    run = open_detector_run(run, verb="convae export --what detect")
    threshold = load_threshold(run.path)
    if threshold is None:
        raise ConvaeError(f"{run.path}: no fitted threshold ({THRESHOLD_FILE}) to put in the graph; fit one with "
                          f"`convae detect {run.path} IMAGES --fit` (or `convae detect {run.path} --eval`) first")
    index = run_code_index(run, model, log=log) if threshold.score == HYBRID else None
    extra = {runtime.SCORE: threshold.score, runtime.THRESHOLD: repr(float(threshold.value))}
    if threshold.heatmap_scale is not None:
        extra[runtime.HEATMAP_SCALE] = repr(float(threshold.heatmap_scale))
    if threshold.pixel_threshold is not None:
        extra[runtime.PIXEL_THRESHOLD] = repr(float(threshold.pixel_threshold))
    outputs = ["reconstruction", "anomaly_map", "score", "anomalous"]
    return DetectGraph(model, threshold, index).eval(), [runtime.INPUT], outputs, (images,), extra


def _trace(graph: torch.nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str]) -> bytes:
    buffer = io.BytesIO()
    dynamic = {name: {0: "batch"} for name in inputs + outputs}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter: the parity check is the proof
        try:
            torch.onnx.export(graph, example, buffer, input_names=inputs, output_names=outputs,
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
        except Exception as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ConvaeError(f"torch could not export this model to ONNX: {first[:300]}") from None
        finally:
            graph.eval()  # the exporter restores the training flag of the top module only
    return buffer.getvalue()


def check_parity(data: bytes, graph: torch.nn.Module, inputs: list[str], outputs: list[str],
                 example: tuple[torch.Tensor, ...]) -> float:
    """Max |onnxruntime − torch| over every float output on ``example`` (another batch size than traced
    would be a stronger check, so the first half runs too); boolean and integer outputs must be equal."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    worst = 0.0
    for count in (len(example[0]), max(1, len(example[0]) // 2 - 1)):
        feeds = tuple(t[:count] for t in example)
        with torch.no_grad():
            want = graph(*feeds)
        want = want if isinstance(want, tuple) else (want,)
        got = session.run(outputs, {name: t.numpy() for name, t in zip(inputs, feeds)})
        for name, a, b in zip(outputs, got, want):
            b = b.numpy()
            if a.shape != b.shape:
                raise ConvaeError(f"the exported {name} has shape {a.shape}, torch gives {b.shape}; not written")
            if a.dtype.kind in "bi" or b.dtype.kind in "bi":
                if not np.array_equal(a, b):
                    raise ConvaeError(f"the exported {name} differs from torch's; not written")
                continue
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            worst = max(worst, float(diff.max(initial=0.0)))
            if (diff > TOLERANCE + RELATIVE * np.abs(b.astype(np.float64))).any():
                raise ConvaeError(f"the exported {name} differs from torch's by up to {diff.max():.3g} "
                                  f"(> {TOLERANCE:g}); not written")
    return worst
