"""Restoring your own image files with a denoise or colorize run, at their own size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from convae.applications.restore.corrupted import RESTORE_TASKS
from convae.applications.tiles import TILE_BATCH, apply_tiled
from convae.core.device import pick_device
from convae.core.errors import ConvaeError
from convae.core.images import UniqueNames, luma, write_png
from convae.core.outputs import check_output_folder, check_output_picture
from convae.data.files import find_image_files, read_image
from convae.run import AUTOENCODER, Run

#: Images of one size restored in one model call (and at most this many input values: big photos go alone).
BATCH, BATCH_VALUES = 256, 16_000_000
#: Every task whose run maps an image to an image of the same size: all take files the same way.
FILE_TASKS = ("reconstruct", *RESTORE_TASKS)


@dataclass
class SizePlan:
    """How one image goes through the model: as it is, padded to (h, w), or resized to it."""

    how: str  # "native", "pad", "resize" or "tile" (the size is the tile's)
    size: tuple[int, int]
    stride: tuple[int, int] | None = None  # tiles: the step between them (default: half a tile)
    batch: int = TILE_BATCH  # tiles: how many go through the model at once


#: A fully convolutional patch model takes tiles up to this side, overlapping by LARGE_TILE_OVERLAP, four at a
#: time (on a 400×600 photo: the same PSNR to 0.01 dB as 64×64 half-overlapping tiles, 1.7× faster; 512 was slower).
LARGE_TILE, LARGE_TILE_OVERLAP, LARGE_TILE_BATCH = 256, 64, 4


def _fits(model: torch.nn.Module, channels: int, h: int, w: int, device: torch.device | str) -> bool:
    try:
        out = model(torch.zeros(1, channels, h, w, device=device))
    except (RuntimeError, ValueError):
        return False
    return tuple(out.shape[-2:]) == (h, w)


@torch.no_grad()
def plan_size(
    model: torch.nn.Module, input_shape: Sequence[int], h: int, w: int, device: torch.device | str = "cpu"
) -> SizePlan:
    """The smallest padding to a multiple of 1, 2, 4, … 64 the model maps back to the same size.

    Fully convolutional presets take (almost) any size; each side is probed on a thin
    image (the other side kept at the run's size), which is exact for convolutional
    layers. Presets with a dense layer (``fc``, ``conv``) take only the run's size: such
    images are resized to it and the result resized back.
    """
    channels, h0, w0 = (int(v) for v in input_shape)
    if (h, w) == (h0, w0):
        return SizePlan("native", (h, w))
    for multiple in (1, 2, 4, 8, 16, 32, 64):
        ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        if _fits(model, channels, ph, w0, device) and _fits(model, channels, h0, pw, device):
            return SizePlan("native" if (ph, pw) == (h, w) else "pad", (ph, pw))
    return SizePlan("resize", (h0, w0))


@torch.no_grad()
def restore_tensor(model: torch.nn.Module, x: torch.Tensor, plan: SizePlan) -> torch.Tensor:
    """Run one 1×C×H×W image through the model following ``plan``; output at the input's H×W."""
    h, w = x.shape[-2:]
    if plan.how == "tile":
        device = x.device
        return torch.stack([apply_tiled(lambda t: model(t).clamp(0, 1), image, plan.size, device=device,
                                        stride=plan.stride, batch=plan.batch) for image in x]).to(device)
    if plan.how == "native":
        return model(x).clamp(0, 1)
    if plan.how == "pad":
        ph, pw = plan.size
        padded = F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")
        return model(padded)[..., :h, :w].clamp(0, 1)
    small = F.interpolate(x, size=plan.size, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(model(small), size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def _model_input(image: torch.Tensor, task: str, channels: int) -> tuple[torch.Tensor, str]:
    """uint8 1×C×H×W → float input with the model's channel count, and what was converted."""
    from convae.data.convert import to_channels

    have = image.shape[1]
    if task == "colorize":
        x = image.float().div(255)
        return (luma(x), "converted RGB to gray (ITU-R 601 luma) as input") if have == 3 else (x, "")
    note = ""
    if have != channels:
        note = "converted RGB to gray (the model takes 1 channel)" if channels == 1 else \
            "replicated gray to RGB (the model takes 3 channels)"
    return to_channels(image, channels).float().div(255), note


def restore_files(
    run_dir: str | Path | Run,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    task: str,
    device: str = "auto",
    engine: Any = None,
) -> list[dict[str, Any]]:
    """Restore (or reconstruct) each image file, or every image in each folder, with a ``task`` run; write PNGs.

    Outputs are named after the inputs: ``OUT/<name>.png`` for a file, ``OUT/<path inside
    the folder>.png`` for a folder's files (``-2``, ``-3`` … appended when two inputs would
    get one name). Images of any size go through fully convolutional models as they are
    (padded to a size the model maps back exactly and cropped); dense models (``fc``,
    ``conv``) get the image resized to the run's size and the result resized back, and
    the result says so. Channels are converted to what the model takes (denoise: to the
    run's 1 or 3; colorize: RGB to gray); denoise writes the model's channels, colorize RGB.

    One dict per input file: ``input``, ``output`` (None on failure), ``ok``, ``error``,
    ``note``. A bad file is reported here and the others still go through. ``engine`` (an
    exported reconstruct graph, convae.applications.export.OnnxModel) stands in for the torch
    model; it takes the run's own size only, so other sizes are resized to it and back.
    """
    if task not in FILE_TASKS:
        raise ConvaeError(f"unknown task {task!r}; choose one of {', '.join(FILE_TASKS)}")
    if not inputs:
        raise ConvaeError(f"{task} needs at least one image file or folder")
    target = pick_device(device) if engine is None else torch.device("cpu")
    run = Run.of(run_dir, kind=AUTOENCODER, verb=f"convae {task}")
    model, config = engine or run.model(target), run.config
    run_task = config.task
    if run_task != task:
        hint = f"use `convae {run_task}`" if run_task in FILE_TASKS else f"train one with --task {task}"
        raise ConvaeError(f"{run.path}: a {run_task} run, not a {task} run; {hint}")
    out_dir = Path(out_dir)
    check_output_folder(out_dir, "--out")
    batch = _Batch(model, target)
    planner = _Planner(model, run, task, target, engine is not None)
    results: list[dict[str, Any]] = []
    names = UniqueNames()
    for found in find_image_files(inputs):
        entry: dict[str, Any] = {"input": str(found.path), "output": None, "ok": False, "error": found.error,
                                 "note": ""}
        results.append(entry)
        if found.error:
            continue
        try:
            destination = out_dir / names.take(found.output_name().as_posix())
            if destination.exists() and destination.resolve() == found.path.resolve():
                raise ConvaeError("refusing to overwrite the input with its result; pick another --out")
            check_output_picture(destination)
            x, plan, entry["note"] = planner.prepare(found.path)
        except ConvaeError as error:  # the CLI names the file itself
            entry["error"] = str(error).removeprefix(f"{found.path}: ")
            continue
        except (RuntimeError, OSError, ValueError) as error:  # out of memory, unreadable, ...
            entry["error"] = _reason(error)
            continue
        batch.add(entry, destination, x, plan)
    batch.flush()
    return results


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class _Planner:
    """How each image goes through the model (as it is, padded, resized or in tiles), one plan per size."""

    def __init__(self, model: Any, run: Run, task: str, target: torch.device, exported: bool) -> None:
        self.model, self.task, self.target, self.exported = model, task, target, exported
        self.input_shape = tuple(int(v) for v in run.config["model"]["input_shape"])
        self.tiling, self.name = run.config.tiling, run.config["model"]["name"]
        self.plans: dict[tuple[int, int], SizePlan] = {}

    def prepare(self, path: Path) -> tuple[torch.Tensor, SizePlan, str]:
        """(the model's input, its plan, the note for the user) for one file."""
        notes: list[str] = []
        x, note = _model_input(read_image(path, notes).unsqueeze(0), self.task, self.input_shape[0])
        h, w = x.shape[-2:]
        notes += [note] if note else []
        if self.tiling.tiled:  # a patch-trained model: every image in tiles, at its own size
            plan = self.plans.get((h, w)) or self.plans.setdefault((h, w), self._tile_plan(h, w))
            if (h, w) != plan.size:
                notes.append(f"in {plan.size[0]}×{plan.size[1]} tiles at full resolution")
        else:
            plan = self.plans.get((h, w)) or self.plans.setdefault(
                (h, w), plan_size(self.model, self.input_shape, h, w, self.target))
        if plan.how == "resize":
            notes.append(f"resized {h}×{w} to the model's {plan.size[0]}×{plan.size[1]} and back "
                         f"({'the exported graph' if self.exported else self.name} takes one size only)")
        return x, plan, "; ".join(notes)

    def _tile_plan(self, h: int, w: int) -> SizePlan:
        """A patch run's tiles. A fully convolutional model (the restoration presets) takes tiles of up to
        LARGE_TILE with a margin of overlap, so each pixel goes through it about once instead of four times
        in half-overlapping patches; a model with a dense layer, or an exported graph, takes its patch only."""
        th, tw = min(h, LARGE_TILE), min(w, LARGE_TILE)
        if not self.exported and (th, tw) != self.tiling.tile and _fits(self.model, self.input_shape[0], th, tw,
                                                                      self.target):
            return SizePlan("tile", (th, tw), (max(th - LARGE_TILE_OVERLAP, 1), max(tw - LARGE_TILE_OVERLAP, 1)),
                            LARGE_TILE_BATCH)
        return SizePlan("tile", self.tiling.tile)


class _Batch:
    """Images of one size go through the model together, BATCH at a time: one call per image cost
    2 ms of model overhead each (24 of 30 s for 10,000 MNIST PNGs)."""

    def __init__(self, model: Any, target: torch.device) -> None:
        self.model, self.target = model, target
        self.pending: list[tuple[dict[str, Any], Path, torch.Tensor]] = []
        self.plan: SizePlan | None = None

    def add(self, entry: dict[str, Any], destination: Path, x: torch.Tensor, plan: SizePlan) -> None:
        first = self.pending[0][2] if self.pending else None
        if first is not None and (first.shape[-2:] != x.shape[-2:] or len(self.pending) >= BATCH
                                  or first.numel() * (len(self.pending) + 1) > BATCH_VALUES):
            self.flush()
        self.pending.append((entry, destination, x))
        self.plan = plan

    def flush(self) -> None:
        if not self.pending or self.plan is None:
            return
        pending, self.pending = self.pending, []
        try:
            restored = restore_tensor(self.model, torch.cat([x for _, _, x in pending]).to(self.target), self.plan)
        except (RuntimeError, ValueError) as error:  # out of memory, ...: each file says so
            for entry, _, _ in pending:
                entry["error"] = _reason(error)
            return
        for (entry, destination, _), image in zip(pending, restored):
            try:
                write_png(destination, image)
            except ConvaeError as error:
                entry["error"] = str(error)
                continue
            except (OSError, ValueError) as error:  # unwritable --out, ...
                entry["error"] = _reason(error)
                continue
            entry.update(output=str(destination), ok=True)
