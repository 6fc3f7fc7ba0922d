"""The HTML report of a run: one self-contained page that a reader can open on its own.

At the top, a summary: what was trained, on what, when, for how long, the code size and
the headline numbers with their units. Then each application's section, in the order SECTIONS lists them (each
returns its HTML, or None when the run has nothing for it), the figures no section showed, and the settings as a short table with
the raw config.json folded away.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from pathlib import Path
from typing import Callable

from convae.applications import evaluate_report
from convae.applications.anomaly import report as anomaly_report
from convae.applications.classify import report as classify_report
from convae.applications.codes import report as codes_report
from convae.applications.restore import report as restore_report
from convae.core.atomic import atomic_write_text
from convae.core.html import STYLE, escape, figure, rows_table
from convae.run import CONFIG, REPORT, Run
from convae.training.keep_best import ends_on_kept_epoch, fell_without_memorisation

#: The settings a reader wants first; the rest stay in the folded config.json.
SETTINGS = ("task", "model", "model_args", "epochs", "batch_size", "lr", "lr_schedule", "optimizer", "loss", "seed",
            "deterministic", "noise", "normal_classes", "val_fraction", "image_size", "channels",
            "augment", "limit")


def write_report(run_dir: str | Path | Run) -> Path:
    """Write RUN_DIR/report.html and return its path."""
    run = Run.of(run_dir)
    parts = [f"<h1>convae run: {escape(run.path.name)}</h1>", summary(run)]
    for _name, section in SECTIONS:
        part = section(run)
        if part:
            parts.append(part)
    shown = set(re.findall(r"data-name='([^']+)'", "\n".join(parts)))
    others = [p for p in sorted(run.figures.glob("*.png")) if p.name not in shown] if run.figures.is_dir() else []
    if others:
        parts.append("<h2>Other figures</h2>" + "".join(figure(p) for p in others))
    parts.append(settings(run))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>convae report: "
            f"{escape(run.path.name)}</title><style>{STYLE}</style></head><body>" + "\n".join(parts)
            + "</body></html>\n")
    path = run.path / REPORT
    atomic_write_text(path, page)
    return path


def summary(run: Run) -> str:
    config, rows = run.config, run.metrics()
    model, dataset = config["model"], config.get("dataset", {})
    kind = "classifier" if config.kind == "classifier" else f"autoencoder ({config.task})"
    shape = "×".join(map(str, model["input_shape"]))
    created = config.get("created") or time.strftime("%Y-%m-%d %H:%M", time.localtime(run.artifact(CONFIG).stat().st_mtime))
    seconds = sum(row.get("seconds") or 0 for row in rows)
    code = model.get("code_shape")
    code_text = ""
    if code:
        values, inputs = math.prod(int(v) for v in code), math.prod(int(v) for v in model["input_shape"])
        code_text = f" · code {'×'.join(map(str, code))} = {values:,} values ({inputs / values:.1f}× fewer than the input)"
    lines = [
        f"<b>{escape(model['name'])}</b> {escape(kind)} on <b>{escape(dataset.get('spec', ''))}</b>: "
        f"{dataset.get('train_size', 0):,} training / {dataset.get('test_size', 0):,} test images of {shape} (C×H×W)"
        f"{escape(code_text)}",
        f"trained {escape(created)}, {len(rows)} epoch(s) in {_duration(seconds)}"
        + (f" · last train loss {rows[-1]['train_loss']:.5g}" if rows else ""),
    ]
    kept = ends_on_kept_epoch(run.path)
    if kept:
        window = f", mean of up to {kept[3]} epochs" if kept[3] > 1 else ""  # runs kept before means: 1
        lines.append(f"the weights are epoch {kept[0]}'s, whose held-out check (pixel AUROC {kept[1]:.3f}{window}) "
                     f"beat the last epoch's ({kept[2]:.3f})")
    elif fell := fell_without_memorisation(run.path):
        lines.append(f"the held-out check fell below epoch {fell['epoch']}'s ({fell['last_check']:.3f} against "
                     f"{fell['check']:.3f}), but the last weights were not memorised (held-out good parts redrawn "
                     f"{fell['memorisation']:.2f}× as badly as training parts), so they stayed")
    return "<div class='summary'>" + "<br>".join(lines) + "</div>"


def settings(run: Run) -> str:
    training = run.config.raw.get("training", {})
    rows = [[key.replace("_", " "), json.dumps(training[key]) if isinstance(training[key], (dict, list)) else
             training[key]] for key in SETTINGS if training.get(key) is not None]
    raw = run.artifact(CONFIG).read_text(encoding="utf-8")
    return ("<h2>Settings</h2>" + rows_table(["setting", "value"], rows) +
            f"<details><summary>config.json</summary><pre>{html.escape(raw)}</pre></details>")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def training_section(run: Run) -> str | None:
    rows = run.metrics()
    if not rows:
        return None
    columns = [c for c in rows[0] if c not in ("loss",)]
    return ("<h2>Training</h2>" + figure(run.figures / "loss.png", "loss per epoch: train, validation and test")
            + rows_table([c.replace("_", " ") for c in columns], [[row.get(c) for c in columns] for row in rows]))


#: The page's sections, in order: the one place that says what the report shows.
SECTIONS: tuple[tuple[str, Callable[[Run], str | None]], ...] = (
    ("evaluation", evaluate_report.evaluation_section),
    ("classification", classify_report.classification_section),
    ("restoration", restore_report.restoration_section),
    ("anomaly", anomaly_report.anomaly_section),
    ("rate", codes_report.rate_section),
    ("latent", codes_report.latent_section),
    ("training", training_section),
)
