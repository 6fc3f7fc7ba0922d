"""A self-contained HTML report of a run: config, metrics and every figure, embedded."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from convae.runs import CONFIG, FIGURES, REPORT, atomic_write_text, read_config, read_metrics, require_run


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    return "" if value is None else str(value)


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.html and return its path."""
    run_dir = require_run(Path(run_dir))
    config = read_config(run_dir)
    metrics = read_metrics(run_dir)
    sections = [f"<h1>convae run: {html.escape(run_dir.name)}</h1>"]
    model = config["model"]
    sections.append(
        f"<p><b>{html.escape(model['name'])}</b> on <b>{html.escape(str(config['dataset']['spec']))}</b>, "
        f"input {'×'.join(map(str, model['input_shape']))}, code {'×'.join(map(str, model.get('code_shape', [])))}"
        f" · {html.escape(config.get('conventions', {}).get('loss_reduction', ''))}</p>"
    )
    for split in ("test", "train"):
        path = run_dir / f"eval-{split}.json"
        if path.exists():
            result = json.loads(path.read_text(encoding="utf-8"))
            keys = [k for k in ("mse", "rmse", "psnr", "ssim", "bce", "l1") if k in result]
            sections.append(f"<h2>Evaluation ({split} split, {result.get('images')} images)</h2>")
            sections.append(_table([result], keys))
    rate_path = run_dir / "rate-test.json"  # written by `convae evaluate --rate` (applications/codes.py)
    if rate_path.exists():
        result = json.loads(rate_path.read_text(encoding="utf-8"))
        sections.append(f"<h2>Rate–distortion ({result.get('images')} test images; see rate_distortion.png)</h2>")
        sections.append(_table(result.get("rows", []), ["codec", "setting", "bpp_per_image", "bpp_amortised", "psnr",
                                                        "ssim", "header_bytes"]))
        sections.append(f"<p>{html.escape(str(result.get('conventions', '')))}</p>")
    detect_path = run_dir / "detect-eval.json"  # written by `convae detect --eval` (applications/anomaly.py)
    if detect_path.exists():
        result = json.loads(detect_path.read_text(encoding="utf-8"))
        fit = result.get("threshold_fit", {})
        sections.append(
            f"<h2>Anomaly detection ({html.escape(str(result.get('dataset')))} test split: "
            f"{result.get('normal_images')} normal ({html.escape(', '.join(result.get('normal_classes', [])))}), "
            f"{result.get('anomalous_images')} anomalous; {html.escape(str(result.get('score')))} score)</h2>"
        )
        sections.append(_table([result], ["auroc", "average_precision", "threshold", "f1", "precision", "recall",
                                          "false_positive_rate"]))
        sections.append(f"<p>threshold: {html.escape(str(fit.get('method')))}"
                        f"{' q=' + str(fit['quantile']) if fit.get('quantile') is not None else ''}"
                        f"{' k=' + str(fit['k']) if fit.get('k') is not None else ''}"
                        f" · fitted on {html.escape(str(fit.get('fitted_on', '')))}</p>")
    if metrics:
        sections.append("<h2>Training</h2>")
        sections.append(_table(metrics, [c for c in metrics[0] if c != "loss"]))
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
