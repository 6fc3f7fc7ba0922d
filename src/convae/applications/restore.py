"""Restoration: denoising and colorization with a trained run, measured against baselines.

A restoration run (``convae train --task denoise|colorize``) learned ``corrupted → clean``.
This module does the three things such a run is for:

* :func:`evaluate_restoration` scores it on a split: PSNR/SSIM of the restored images
  against the clean ones, next to doing nothing (the corrupted input itself; for
  colorization the gray image replicated to RGB) and a classical baseline whose one
  parameter is chosen on a validation split (denoising: the better of a Gaussian and a
  median filter; colorization: the mean colour of each gray level).
* :func:`show_restoration` draws rows of corrupted / restored / clean test images.
* :func:`restore_files` restores the user's own image files and writes PNGs.

Reproducibility: the test (or train) split is corrupted exactly as the trainer corrupts it
for its test loss, in chunks of ``max(batch_size, 256)`` images with the generator
``batch_generator(seed, -1, chunk)``, so ``evaluate``'s MSE equals the run's last
``test_loss`` for an MSE run. The validation images used to choose the baseline are
corrupted with ``batch_generator(seed, -2, chunk)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from convae.data import Batches, ImageSet
from convae.data.corrupt import Corruption, batch_generator, gray
from convae.data.files import find_image_files, read_image
from convae.errors import ConvaeError
from convae.metrics import batch_ssim, psnr_from_mse
from convae.models.heads import smooth

RESTORE_TASKS = ("denoise", "colorize")
#: The filter parameters the denoising baseline chooses from (on the validation split).
GAUSSIAN_SIGMAS = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8)
MEDIAN_SIZES = (3, 5, 7)
#: Gray levels of the colorization baseline's lookup table.
COLOUR_LEVELS = 64
#: At most this many validation images choose/fit the baseline (they are a random sample).
MAX_BASELINE_IMAGES = 2000
#: Seed "epochs" of the corruption generators: -1 the evaluated split (as the trainer), -2 validation.
EVAL_TAG, VAL_TAG = -1, -2

Filter = Callable[[torch.Tensor], torch.Tensor]


# -- classical filters -----------------------------------------------------------------


def gaussian_filter(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of N×C×H×W, radius ceil(3σ), edges replicated (a new tensor even at σ 0)."""
    return smooth(x, sigma) if sigma > 0 else x.clone()


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Median of each size×size window (size odd), per channel, edges replicated."""
    if size % 2 == 0 or size < 1:
        raise ConvaeError(f"median filter size must be odd and positive, got {size}")
    if size == 1:
        return x.clone()
    if x.device.type == "cpu":  # scipy's C loop is several times faster than sorting patches
        from scipy.ndimage import median_filter as scipy_median  # noqa: PLC0415

        array = x.detach().contiguous().numpy()
        return torch.from_numpy(scipy_median(array, size=(1, 1, size, size), mode="nearest"))
    return _median_windows(x, size)


def _median_windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """The same median in torch (any device): the size² shifted views, stacked."""
    h, w = x.shape[-2:]
    pad = size // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    windows = torch.stack([padded[..., i : i + h, j : j + w] for i in range(size) for j in range(size)], dim=2)
    return windows.median(dim=2).values


@dataclass(frozen=True)
class DenoiseFilter:
    """One classical denoiser: a Gaussian blur of ``param`` σ or a median of ``param``×``param``."""

    family: str
    param: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.family == "gaussian":
            return gaussian_filter(x, float(self.param))
        return median_filter(x, int(self.param))

    def __str__(self) -> str:
        if self.family == "gaussian":
            return f"Gaussian filter σ={self.param:g}"
        return f"median filter {int(self.param)}×{int(self.param)}"


def denoise_candidates() -> list[DenoiseFilter]:
    return [DenoiseFilter("gaussian", s) for s in GAUSSIAN_SIGMAS] + [DenoiseFilter("median", k) for k in MEDIAN_SIZES]


class ColourTable:
    """Colorization baseline: gray + the mean colour offset of that gray level.

    Fitted on clean RGB images: for each of ``levels`` gray levels, the mean of
    (R−Y, G−Y, B−Y) over the pixels whose luma Y falls in that level. Levels with no pixels
    get offset 0 (they stay gray).
    """

    def __init__(self, levels: int = COLOUR_LEVELS) -> None:
        self.levels = levels
        self.sums = torch.zeros(levels, 3, dtype=torch.float64)
        self.counts = torch.zeros(levels, dtype=torch.float64)
        self.images = 0

    def _bins(self, y: torch.Tensor) -> torch.Tensor:
        return (y * self.levels).long().clamp_(0, self.levels - 1)

    def fit(self, x: torch.Tensor) -> "ColourTable":
        y = gray(x)
        bins = self._bins(y).flatten()
        offsets = (x[:, :3] - y).permute(0, 2, 3, 1).reshape(-1, 3).double().cpu()
        self.sums.index_add_(0, bins.cpu(), offsets)
        self.counts.index_add_(0, bins.cpu(), torch.ones(len(bins), dtype=torch.float64))
        self.images += x.shape[0]
        return self

    @property
    def offsets(self) -> torch.Tensor:
        return (self.sums / self.counts.clamp(min=1).unsqueeze(1)).float()

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        """1-channel gray N×1×H×W → RGB N×3×H×W."""
        table = self.offsets.to(y.device)
        offset = table[self._bins(y[:, 0])].permute(0, 3, 1, 2)
        return (y + offset).clamp_(0, 1)

    def __str__(self) -> str:
        return f"mean colour of each of {self.levels} gray levels"


# -- corrupted splits, reproducibly ----------------------------------------------------------


def eval_chunk(config: dict[str, Any]) -> int:
    """The chunk size the trainer corrupts evaluation images in: max(batch_size, 256)."""
    return max(int(config["training"].get("batch_size") or 1), 256)


def corrupted_batches(
    images: torch.Tensor, corruption: Corruption, seed: int, chunk: int, device: torch.device | str, tag: int = EVAL_TAG
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(clean, corrupted) float batches of a uint8 split, corrupted with (seed, tag, chunk index)."""
    for index, x in enumerate(Batches(images, chunk, shuffle=False, seed=0, device=device)):
        yield x, corruption(x, batch_generator(seed, tag, index, device))


def as_output(x_in: torch.Tensor, channels: int) -> torch.Tensor:
    """The corrupted input as an image of the output's channel count (gray replicated to RGB)."""
    return x_in if x_in.shape[1] == channels else x_in.expand(-1, channels, -1, -1)


class _Scores:
    """Sums of per-image MSE, L1, BCE and SSIM of one estimate against the clean images."""

    def __init__(self) -> None:
        self.mse = self.l1 = self.bce = self.ssim = 0.0
        self.n = 0

    def add(self, estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        estimate = estimate.float()
        per_image = (estimate - clean).pow(2).flatten(1).mean(1).double()
        self.mse += per_image.sum().item()
        self.l1 += (estimate - clean).abs().flatten(1).mean(1).double().sum().item()
        clipped = estimate.clamp(1e-7, 1 - 1e-7)
        self.bce += F.binary_cross_entropy(clipped, clean, reduction="none").flatten(1).mean(1).double().sum().item()
        self.ssim += batch_ssim(estimate, clean).double().sum().item()
        self.n += clean.shape[0]
        return per_image.cpu()

    def summary(self) -> dict[str, float]:
        n = max(self.n, 1)
        mse = self.mse / n
        return {"mse": mse, "rmse": math.sqrt(mse), "psnr": psnr_from_mse(mse), "ssim": self.ssim / n,
                "bce": self.bce / n, "l1": self.l1 / n}


# -- choosing the classical baseline ---------------------------------------------------------


def run_corruption(config: dict[str, Any]) -> Corruption:
    from convae.train import TrainConfig  # noqa: PLC0415

    task = config.get("task", "reconstruct")
    if task not in RESTORE_TASKS:
        raise ConvaeError(f"this run's task is {task!r}, not denoise or colorize")
    corruption = TrainConfig.from_dict(config["training"]).corruption()
    if corruption is None:
        raise ConvaeError(f"the {task} run has no corruption in its config (training.noise)")
    return corruption


def validation_images(config: dict[str, Any]) -> tuple[ImageSet, str]:
    """The validation split the run held out, or (val_fraction 0) a seeded 10% of its training split.

    Only the baseline's parameter is chosen on it. Returns the images (at most
    MAX_BASELINE_IMAGES, a random sample already) and a description.
    """
    from convae.evaluation import load_run_split  # noqa: PLC0415
    from convae.train import TrainConfig, split_validation  # noqa: PLC0415

    cfg = TrainConfig.from_dict(config["training"])
    train = load_run_split(config, "train")
    if cfg.normal_classes is not None:
        train = train.select_classes(cfg.normal_classes)
    fraction = cfg.val_fraction or 0.0
    held_out = fraction > 0
    _, val = split_validation(train, fraction if held_out else 0.1, cfg.seed)
    if val is None:  # a training split too small to hold out 10%: use it all
        val = train
    where = "the run's validation split" if held_out else "a seeded 10% of the training split"
    if len(val) > MAX_BASELINE_IMAGES:
        val = val.subset(range(MAX_BASELINE_IMAGES))
    return val, f"{len(val)} images of {where}"


@torch.no_grad()
def choose_denoise_filter(
    val: torch.Tensor, corruption: Corruption, seed: int, chunk: int, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """Score every candidate filter on the (corrupted) validation images; the best PSNR wins.

    Returns ``{"best": DenoiseFilter, "families": {family: {"param", "val_psnr"}}, "val_psnr": {name: psnr}}``.
    """
    candidates = denoise_candidates()
    sse = torch.zeros(len(candidates), dtype=torch.float64)
    count = 0
    for clean, noisy in corrupted_batches(val, corruption, seed, chunk, device, tag=VAL_TAG):
        for i, candidate in enumerate(candidates):
            sse[i] += (candidate(noisy) - clean).pow(2).flatten(1).mean(1).double().sum().cpu()
        count += clean.shape[0]
    psnr = [psnr_from_mse(v / max(count, 1)) for v in sse.tolist()]
    families: dict[str, dict[str, Any]] = {}
    for candidate, value in zip(candidates, psnr):
        best = families.get(candidate.family)
        if best is None or value > best["val_psnr"]:
            families[candidate.family] = {"param": candidate.param, "val_psnr": value}
    best_index = max(range(len(candidates)), key=lambda i: psnr[i])
    return {"best": candidates[best_index], "families": families,
            "val_psnr": {str(c): p for c, p in zip(candidates, psnr)}}


@torch.no_grad()
def fit_colour_table(val: torch.Tensor, chunk: int = 512, device: torch.device | str = "cpu") -> ColourTable:
    table = ColourTable()
    for x in Batches(val, chunk, shuffle=False, seed=0, device=device):
        table.fit(x)
    return table


# -- evaluation --------------------------------------------------------------------------------


@torch.no_grad()
def restoration_metrics(
    model: torch.nn.Module,
    data: ImageSet,
    corruption: Corruption,
    *,
    seed: int,
    chunk: int,
    baselines: dict[str, Filter],
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Scores of the model, of the corrupted input and of each named baseline on ``data``.

    Returns the model's ``mse rmse psnr ssim bce l1 per_class_mse`` (as reconstruction
    does), ``input_*`` for the input and ``{name}_*`` for each baseline.
    """
    model.eval()
    scores = {"model": _Scores(), "input": _Scores(), **{name: _Scores() for name in baselines}}
    n_classes = max(len(data.classes), 1)
    class_sse = torch.zeros(n_classes, dtype=torch.float64)
    class_count = torch.zeros(n_classes, dtype=torch.float64)
    offset = 0
    for clean, x_in in corrupted_batches(data.images, corruption, seed, chunk, device):
        per_image = scores["model"].add(model(x_in), clean)
        scores["input"].add(as_output(x_in, clean.shape[1]), clean)
        for name, apply in baselines.items():
            scores[name].add(apply(x_in), clean)
        labels = data.labels[offset : offset + clean.shape[0]]
        known = labels >= 0
        if known.any():
            class_sse.index_add_(0, labels[known], per_image[known])
            class_count.index_add_(0, labels[known], torch.ones(int(known.sum()), dtype=torch.float64))
        offset += clean.shape[0]
    result: dict[str, Any] = {"split": data.split, "images": len(data)}
    result.update(scores.pop("model").summary())
    result["per_class_mse"] = {
        name: class_sse[i].item() / class_count[i].item() for i, name in enumerate(data.classes) if class_count[i] > 0
    }
    for name, score in scores.items():
        summary = score.summary()
        for key in ("mse", "psnr", "ssim"):
            result[f"{name}_{key}"] = summary[key]
    return result


def evaluate_restoration(
    model: torch.nn.Module, config: dict[str, Any], data: ImageSet, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """Everything ``convae evaluate`` reports for a denoise or colorize run (see the module doc)."""
    corruption = run_corruption(config)
    seed = int(config["training"].get("seed", 0))
    chunk = eval_chunk(config)
    val, val_where = validation_images(config)
    task = config["task"]
    result: dict[str, Any] = {"task": task, "corruption": str(corruption)}
    if task == "denoise":
        choice = choose_denoise_filter(val.images, corruption, seed, chunk, device)
        best: DenoiseFilter = choice["best"]
        families = {family: DenoiseFilter(family, info["param"]) for family, info in choice["families"].items()}
        metrics = restoration_metrics(model, data, corruption, seed=seed, chunk=chunk, device=device,
                                      baselines={"baseline": best, **{f"_{k}": f for k, f in families.items()}})
        result["input"] = f"the noisy input ({corruption})"
        result["baseline"] = f"{best}, the best of {len(denoise_candidates())} filters on {val_where}"
        result["baselines"] = {
            family: {"filter": str(families[family]), "param": info["param"], "val_psnr": info["val_psnr"],
                     "psnr": metrics.pop(f"_{family}_psnr"), "ssim": metrics.pop(f"_{family}_ssim"),
                     "mse": metrics.pop(f"_{family}_mse")}
            for family, info in choice["families"].items()
        }
        result["baseline_val_psnr"] = choice["val_psnr"]
    else:
        table = fit_colour_table(val.images, device=device)
        metrics = restoration_metrics(model, data, corruption, seed=seed, chunk=chunk, device=device,
                                      baselines={"baseline": table})
        result["input"] = "the gray input replicated to RGB"
        result["baseline"] = f"gray + the {table}, fitted on {val_where}"
    result.update(metrics)
    result["conventions"] = (
        "pixels in [0,1]; mean per pixel; PSNR from the split's mean MSE; the model scored on its raw output, SSIM "
        f"on it clipped to [0,1]; the split corrupted as in training's test loss (chunks of {chunk}, seed {seed})"
    )
    return result


def comparison_rows(result: dict[str, Any]) -> list[tuple[str, float, float, float]]:
    """(what, MSE, PSNR, SSIM) for the input, the baseline and the model, in that order."""
    return [
        (f"input: {result['input']}", result["input_mse"], result["input_psnr"], result["input_ssim"]),
        (f"baseline: {result['baseline']}", result["baseline_mse"], result["baseline_psnr"], result["baseline_ssim"]),
        ("convae", result["mse"], result["psnr"], result["ssim"]),
    ]


# -- figures -----------------------------------------------------------------------------------


@torch.no_grad()
def show_restoration(
    model: torch.nn.Module, config: dict[str, Any], data: ImageSet, path: Path, n: int, device: torch.device | str
) -> Path:
    """Rows of corrupted / restored / clean for the first ``n`` images of ``data``."""
    corruption = run_corruption(config)
    chunk = eval_chunk(config)
    seed = int(config["training"].get("seed", 0))
    count = min(n, len(data), chunk)
    clean, x_in = next(corrupted_batches(data.images[:chunk], corruption, seed, chunk, device))
    clean, x_in = clean[:count], x_in[:count]
    restored = model(x_in).float().clamp(0, 1)
    rows = [
        ("gray input" if config["task"] == "colorize" else f"noisy ({corruption})", x_in.cpu()),
        ("restored", restored.cpu()),
        ("clean", clean.cpu()),
    ]
    title = f"{config['task']}: {config['model']['name']} on {config['dataset']['spec']}, first {count} test images"
    return image_rows_figure(rows, path, title=title, psnr=[_psnr_each(x, clean) for _, x in rows[:2]])


def _psnr_each(estimate: torch.Tensor, clean: torch.Tensor) -> list[float]:
    estimate = as_output(estimate.to(clean.device), clean.shape[1])
    mse = (estimate - clean).pow(2).flatten(1).mean(1)
    return [psnr_from_mse(v) for v in mse.tolist()]


def image_rows_figure(
    rows: Sequence[tuple[str, torch.Tensor]], path: Path, title: str = "", psnr: Sequence[Sequence[float]] = ()
) -> Path:
    """A grid: one labelled row per tensor N×C×H×W in [0,1]; optional PSNR under the first rows."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from convae import viz  # noqa: PLC0415

    count = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), count, figsize=(1.8 * count, 1.9 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for column in range(count):
            axis = axes[r][column]
            image = images[column]
            if image.shape[0] == 1:
                axis.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                axis.imshow(image[:3].permute(1, 2, 0).numpy(), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if r < len(psnr):
                axis.set_xlabel(f"{psnr[r][column]:.1f} dB", fontsize=8)
            if column == 0:
                axis.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return viz.save_figure(fig, Path(path))


# -- the user's own images ----------------------------------------------------------------------


@dataclass
class SizePlan:
    """How one image goes through the model: as it is, padded to (h, w), or resized to it."""

    how: str  # "native", "pad" or "resize"
    size: tuple[int, int]


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
    from convae.data.convert import to_channels  # noqa: PLC0415

    have = image.shape[1]
    if task == "colorize":
        x = image.float().div(255)
        return (gray(x), "converted RGB to gray (ITU-R 601 luma) as input") if have == 3 else (x, "")
    note = ""
    if have != channels:
        note = "converted RGB to gray (the model takes 1 channel)" if channels == 1 else \
            "replicated gray to RGB (the model takes 3 channels)"
    return to_channels(image, channels).float().div(255), note


def _write_png(path: Path, image: torch.Tensor) -> None:
    """Write C×H×W float in [0,1] as an 8-bit gray or RGB PNG, atomically."""
    from PIL import Image  # noqa: PLC0415

    from convae.runs import atomic_write  # noqa: PLC0415

    array = image.clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    array = array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).contiguous().numpy()
    picture = Image.fromarray(array, mode="L" if array.ndim == 2 else "RGB")
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def restore_files(
    run_dir: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    task: str,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Restore each image file (or every image in each folder) with a ``task`` run; write PNGs.

    Outputs are named after the inputs: ``OUT/<name>.png`` for a file, ``OUT/<path inside
    the folder>.png`` for a folder's files (``-2``, ``-3`` … appended when two inputs would
    get one name). Images of any size go through fully convolutional models as they are
    (padded to a size the model maps back exactly and cropped); dense models (``fc``,
    ``conv``) get the image resized to the run's size and the result resized back, and
    the result says so. Channels are converted to what the model takes (denoise: to the
    run's 1 or 3; colorize: RGB to gray); denoise writes the model's channels, colorize RGB.

    One dict per input file: ``input``, ``output`` (None on failure), ``ok``, ``error``,
    ``note``. A bad file is reported here and the others still go through.
    """
    from convae.runs import load_model  # noqa: PLC0415
    from convae.train import pick_device  # noqa: PLC0415

    if task not in RESTORE_TASKS:
        raise ConvaeError(f"unknown restoration task {task!r}")
    if not inputs:
        raise ConvaeError(f"{task} needs at least one image file or folder")
    target = pick_device(device)
    model, config = load_model(Path(run_dir), target)
    run_task = config.get("task", "reconstruct")
    if run_task != task:
        hint = f"use `convae {run_task}`" if run_task in RESTORE_TASKS else f"train one with --task {task}"
        raise ConvaeError(f"{run_dir}: a {run_task} run, not a {task} run; {hint}")
    input_shape = tuple(int(v) for v in config["model"]["input_shape"])
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConvaeError(f"--out {out_dir}: exists and is not a folder")
    results: list[dict[str, Any]] = []
    taken: set[Path] = set()
    plans: dict[tuple[int, int], SizePlan] = {}
    for found in find_image_files(inputs):
        path = found.path
        entry: dict[str, Any] = {"input": str(path), "output": None, "ok": False, "error": found.error, "note": ""}
        results.append(entry)
        if found.error:
            continue
        try:
            destination = out_dir / found.output_name()
            stem, number = destination.with_suffix(""), 2
            while destination in taken:
                destination = Path(f"{stem}-{number}.png")
                number += 1
            if destination.exists() and destination.resolve() == path.resolve():
                raise ConvaeError("refusing to overwrite the input with its result; pick another --out")
            image = read_image(path).unsqueeze(0)
            x, note = _model_input(image, task, input_shape[0])
            h, w = x.shape[-2:]
            plan = plans.get((h, w)) or plans.setdefault((h, w), plan_size(model, input_shape, h, w, target))
            if plan.how == "resize":
                extra = f"resized {h}×{w} to the model's {plan.size[0]}×{plan.size[1]} and back ({config['model']['name']} takes one size only)"
                note = f"{note}; {extra}" if note else extra
            restored = restore_tensor(model, x.to(target), plan)[0]
            _write_png(destination, restored)
        except ConvaeError as error:  # the CLI names the file itself
            entry["error"] = str(error).removeprefix(f"{path}: ")
            continue
        except (RuntimeError, OSError, ValueError) as error:  # out of memory, unwritable --out, ...
            entry["error"] = " ".join(str(error).split()) or type(error).__name__
            continue
        taken.add(destination)
        entry.update(output=str(destination), ok=True, note=note)
    return results
