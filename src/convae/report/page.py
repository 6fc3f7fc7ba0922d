"""A self-contained HTML report of a run: summary, each application's section, training, figures, config."""

from __future__ import annotations

import base64
import html
from pathlib import Path

# Each application registers its section when imported; these are the ones the page shows.
from convae.applications import evaluate_report  # noqa: F401
from convae.applications.anomaly import report as anomaly_report  # noqa: F401
from convae.applications.codes import report as codes_report  # noqa: F401
from convae.core.atomic import atomic_write_text
from convae.report.html import table
from convae.run import CONFIG, FIGURES, REPORT, Run
from convae.run.run import REPORT_SECTIONS


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.html and return its path."""
    run = Run.open(run_dir)
    run_dir, config, metrics = run.path, run.config, run.metrics()
    sections = [f"<h1>convae run: {html.escape(run_dir.name)}</h1>"]
    model = config["model"]
    sections.append(
        f"<p><b>{html.escape(model['name'])}</b> on <b>{html.escape(str(config['dataset']['spec']))}</b>, "
        f"input {'×'.join(map(str, model['input_shape']))}, code {'×'.join(map(str, model.get('code_shape', [])))}"
        f" · {html.escape(config.get('conventions', {}).get('loss_reduction', ''))}</p>"
    )
    for _order, _name, section in REPORT_SECTIONS:
        part = section(run)
        if part:
            sections.append(part)
    if metrics:
        sections.append("<h2>Training</h2>")
        sections.append(table(metrics, [c for c in metrics[0] if c != "loss"]))
    figures = sorted((run_dir / FIGURES).glob("*.png")) if (run_dir / FIGURES).is_dir() else []
    if figures:
        sections.append("<h2>Figures</h2>")
    for figure in figures:
        data = base64.b64encode(figure.read_bytes()).decode("ascii")
        sections.append(
            f"<figure><img alt='{html.escape(figure.stem)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(figure.name)}</figcaption></figure>"
        )
    sections.append(f"<h2>Config</h2><pre>{html.escape((run_dir / CONFIG).read_text(encoding='utf-8'))}</pre>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>convae report</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}"
        "</style></head><body>" + "\n".join(sections) + "</body></html>\n"
    )
    path = run_dir / REPORT
    atomic_write_text(path, page)
    return path
