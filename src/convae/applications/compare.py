"""``convae compare``: runs side by side, their settings that differ, their numbers, their curves, their pictures.

The terminal gets the tables; ``--out compare.html`` also gets one self-contained page
with the loss curves overlaid and the same test images reconstructed by each run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from convae.core.atomic import atomic_write_text
from convae.core.device import pick_device
from convae.core.errors import ConvaeError
from convae.core.html import escape, png_figure, rows_table
from convae.core.outputs import check_output_file
from convae.data.convert import convert_images
from convae.run import Run

#: (label, where it comes from): the numbers compared, the first that a run has in each row.
NUMBERS = (("test RMSE", "eval-test.json", "rmse", "{:.4f}"), ("test PSNR", "eval-test.json", "psnr", "{:.2f} dB"),
           ("test SSIM", "eval-test.json", "ssim", "{:.4f}"), ("test accuracy", "eval-test.json", "accuracy", "{:.2%}"),
           ("AUROC", "detect-eval.json", "auroc", "{:.4f}"))


def compare_runs(paths: Sequence[str | Path], *, out: str | Path | None = None, images: int = 6,
                 device: str = "auto") -> dict[str, Any]:
    """The comparison as data (and as a page when ``out`` is given)."""
    if len(paths) < 2:
        raise ConvaeError("compare needs at least two run directories")
    if out is not None:
        check_output_file(Path(out), "--out", "compare-html")
    runs = [Run.open(path) for path in paths]
    names = _names(runs)
    rows = []
    for label, file, key, form in NUMBERS:
        values = [(run.read_json(file) or {}).get(key) for run in runs]
        if any(v is not None for v in values):
            rows.append([label, *["—" if v is None else form.format(v) for v in values]])
    last = [run.metrics()[-1] if run.metrics() else {} for run in runs]
    if any("test_bpp_estimate" in row for row in last):  # codec runs: the rate and quality they trained to
        rows.append(["test bpp (estimate)", *["—" if "test_bpp_estimate" not in row else
                                              f"{row['test_bpp_estimate']:.4f}" for row in last]])
        rows.append(["test PSNR (codec)", *["—" if "test_psnr" not in row else f"{row['test_psnr']:.2f} dB"
                                            for row in last]])
    rows.append(["epochs", *[str(row.get("epoch", "—")) for row in last]])
    rows.append(["last train loss", *["—" if "train_loss" not in row else f"{row['train_loss']:.5g}" for row in last]])
    rows.append(["training time", *[f"{sum(r.get('seconds') or 0 for r in run.metrics()):.0f} s" for run in runs]])
    result = {"runs": [str(run.path) for run in runs], "names": names, "metrics": rows,
              "differences": differences(runs)}
    if out is not None:
        result["page"] = str(_page(runs, names, result, Path(out), images, pick_device(device)))
    return result


def differences(runs: list[Run]) -> list[list[str]]:
    """[setting, value in each run] for every setting (training and model parameters) that differs."""
    flat = []
    for run in runs:
        config = run.config.raw
        values = {f"model.{k}": v for k, v in config.get("model", {}).get("params", {}).items()}
        values.update({k: v for k, v in config.get("training", {}).items()
                       if k not in ("threads", "device", "model_args")})  # model_args: the model.* rows
        values["model"] = config.get("model", {}).get("name")
        flat.append(values)
    keys = sorted({key for values in flat for key in values})
    return [[key, *[_text(values.get(key)) for values in flat]] for key in keys
            if len({json.dumps(values.get(key), sort_keys=True) for values in flat}) > 1]


def _text(value: Any) -> str:
    return "—" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _names(runs: list[Run]) -> list[str]:
    names = [run.path.name for run in runs]
    return names if len(set(names)) == len(names) else [str(run.path) for run in runs]


def _page(runs: list[Run], names: list[str], result: dict[str, Any], out: Path, count: int,
          device: torch.device) -> Path:
    parts = [f"<h1>convae: {len(runs)} runs side by side</h1>",
             "<h2>Numbers</h2>" + rows_table(["", *names], result["metrics"]),
             "<h2>Settings that differ</h2>" + (rows_table(["setting", *names], result["differences"])
                                                if result["differences"] else "<p>none</p>")]
    curves = _loss_curves(runs, names)
    if curves:
        parts.append("<h2>Loss curves</h2>" + png_figure(curves, "train (solid) and test (dashed) loss per epoch"))
    pictures = _reconstructions(runs, names, count, device)
    if pictures:
        parts.append("<h2>The same test images, reconstructed by each run</h2>" +
                     png_figure(pictures, "first row: the originals; then one row per run"))
    from convae.core.html import STYLE

    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>convae compare</title><style>{STYLE}</style>"
            "</head><body>" + "\n".join(parts) + "<p>" + escape(", ".join(result["runs"])) + "</p></body></html>\n")
    atomic_write_text(out, page)
    return out


def _loss_curves(runs: list[Run], names: list[str]) -> bytes | None:
    from convae.viz import figure_png, plt

    histories = [run.metrics() for run in runs]
    if not any(histories):
        return None
    fig, axis = plt.subplots(figsize=(6.5, 4))
    for name, rows, colour in zip(names, histories, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        epochs = [row["epoch"] for row in rows]
        axis.plot(epochs, [row["train_loss"] for row in rows], "-", color=colour, label=f"{name} train")
        if rows and "test_loss" in rows[0]:
            axis.plot(epochs, [float("nan") if row.get("test_loss") is None else row["test_loss"] for row in rows],
                      "--", color=colour, label=f"{name} test")  # an inspect run measures it on some epochs
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss (as each run measures it)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return figure_png(fig)


@torch.no_grad()
def _reconstructions(runs: list[Run], names: list[str], count: int, device: torch.device) -> bytes | None:
    """The first run's test images (after show's choice) through every reconstruction run."""
    from convae.applications.show import pick_examples
    from convae.viz import _as_picture, figure_png, plt

    autoencoders = [(name, run) for name, run in zip(names, runs)
                    if run.config.kind != "classifier" and run.config.reconstructs
                    and not run.config.tiling.tiled]  # a patch run's model takes one patch, not these images
    if not autoencoders:
        return None
    data = autoencoders[0][1].splits().test
    picked = pick_examples(data.labels.tolist(), count)
    originals = data.images[picked]
    rows = [("original", originals.float().div(255))]
    for name, run in autoencoders:
        channels, height, width = run.config.input_shape
        x = convert_images(originals, channels, (height, width)).to(device).float().div(255)
        rows.append((name, run.model(device)(x).float().clamp(0, 1).cpu()))
    fig, axes = plt.subplots(len(rows), len(picked), figsize=(1.6 * len(picked), 1.7 * len(rows)), squeeze=False)
    for r, (label, pictures) in enumerate(rows):
        for c in range(len(picked)):
            image, cmap = _as_picture(pictures[c])
            axes[r][c].imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
    return figure_png(fig)
