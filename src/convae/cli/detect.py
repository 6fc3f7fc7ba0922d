"""``convae detect``: anomaly scores, verdicts, heatmaps and detection metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from convae.cli._app import app, data_dir_option, engine_option, err, onnx_option, open_run, out, parse_classes, shown
from convae.core.errors import ConvaeError


@app.command()
def detect(
    run_dir: Path = typer.Argument(..., help="run directory (best: trained with --normal-classes)"),
    inputs: Optional[list[Path]] = typer.Argument(None, help="image files and/or folders (searched recursively)"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="use this threshold now (not stored)"),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="write path, score, verdict, note per image here"),
    heatmaps: Optional[Path] = typer.Option(None, "--heatmaps", help="folder for PNGs: input, reconstruction, error over input; at the image's own size the error over the image with a colour bar (NAME_overlay.png, or NAME.png for a --patch run) and the predicted defect mask (…_mask.png)"),
    score: Optional[str] = typer.Option(None, "--score", help="ssim (1 - SSIM, default), mse, l1, or hybrid (ssim + the code's distance to the normal training codes); default: the stored threshold's"),
    fit: bool = typer.Option(False, "--fit", help="(re)fit the threshold on the run's validation split and store it"),
    method: str = typer.Option("quantile", "--threshold-method", help="quantile, meanstd or f1 (how to fit)"),
    quantile: float = typer.Option(0.99, "--quantile", help="quantile of the normal validation scores (method quantile)"),
    k: float = typer.Option(3.0, "--k", help="mean + k·std of the normal validation scores (method meanstd)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="dataset for --eval (default: the run's)"),
    data_dir: Optional[Path] = data_dir_option(),
    evaluate: bool = typer.Option(False, "--eval", help="AUROC, AP, F1 on the test split; ROC + histograms into RUN_DIR/figures"),
    normal_classes: Optional[str] = typer.Option(None, "--normal-classes", help="for --eval: classes counted as normal, as indices or names (default: the run's)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (one object per image, or the --eval result)"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    engine: Optional[str] = engine_option(),
    onnx: Optional[Path] = onnx_option(),
) -> None:
    """Anomaly detection: score images by reconstruction error and flag those above the threshold.

    \b
    Examples:  convae detect runs/mnist-3 photos/ --csv scores.csv --heatmaps heat/
               convae detect runs/mnist-3 --eval
               convae detect runs/bottle --eval            (mvtec:PATH data: also pixel AUROC and AUPRO per defect type)
               convae detect runs/mnist-3 photos/ --onnx detector.onnx   (from convae export --what detect)

    The threshold is fitted on the run's held-out normal validation images the first time (or with --fit) and stored in RUN_DIR/threshold.json. Exit code 2 if a file could not be read (the others are still scored and written).
    """
    from convae.applications import anomaly
    from convae.applications.export.engine import open_engine

    run = open_run(run_dir, "autoencoder", "convae detect", data_dir=data_dir)
    if not inputs and not evaluate and not fit:
        raise ConvaeError("detect needs images or folders to score, --eval, or --fit")
    if method not in anomaly.THRESHOLD_METHODS:
        raise ConvaeError(f"--threshold-method must be one of {', '.join(anomaly.THRESHOLD_METHODS)}, got {method!r}")
    if score is not None:
        anomaly.check_score_kind(score)
    if fit and threshold is not None:
        raise ConvaeError("--fit and --threshold exclude each other (a given threshold is not fitted)")
    how = dict(threshold_value=threshold, score=score, refit=fit, method=method, quantile=quantile, k=k,
               device=device, log=_log)
    exported = open_engine(run, engine, onnx, "detect", "convae detect")
    if exported is not None:
        _refuse_with_onnx(fit=fit, evaluate=evaluate, threshold=threshold is not None, score=score is not None,
                          inputs=bool(inputs))
        how = dict(device=device, log=_log, engine=exported)
    fitted = found = None
    if fit and not inputs and not evaluate:
        fitted = anomaly.resolve_threshold(run, value=threshold, score=score, refit=True, method=method,
                                           quantile=quantile, k=k, device=device, log=_log)
        out.print(f"threshold {fitted.describe()}; {100 * (fitted.validation_flagged or 0):.1f}% of the validation "
                  f"normals are above it", markup=False, highlight=False)
    if inputs:
        found = anomaly.detect_paths(run, inputs, csv_path=csv_path, heatmaps=heatmaps, **how)
        fitted = found.threshold
        _print_scores(found, as_json, [csv_path, heatmaps])
    if evaluate:
        if fitted is not None:
            how.update(refit=False, threshold_value=None)
        result = anomaly.evaluate_detection(run, dataset=dataset, normal_classes=parse_classes(normal_classes),
                                            threshold=fitted, **how)
        from convae.report.page import write_report

        if result["file"].endswith(anomaly.EVAL_FILE):  # the run's own evaluation: its report section changed
            result["report"] = str(write_report(run))
        if as_json:
            print(json.dumps(result))
        else:
            _print_evaluation(result)
    if found is not None and found.unreadable:
        scored = len(found.results) - len(found.unreadable)
        raise ConvaeError(f"{len(found.unreadable)} of {len(found.results)} file(s) could not be read; "
                          + (f"the other {scored} were scored" if scored else "nothing was scored"))


def _refuse_with_onnx(*, inputs: bool, **given: bool) -> None:
    """The exported graph holds its own score and threshold: flags that would change them are refused."""
    clash = [f"--{'eval' if flag == 'evaluate' else flag}" for flag, on in given.items() if on]
    if clash:
        raise ConvaeError(f"{clash[0]} cannot go with --onnx: the exported graph holds its own score and threshold; "
                          "drop it, or re-export after refitting")
    if not inputs:
        raise ConvaeError("detect --onnx needs images or folders to score")


def _log(line: str) -> None:
    err.print(line, markup=False, highlight=False, soft_wrap=True)


def _print_scores(found: Any, as_json: bool, written: list[Path | None]) -> None:
    """One line per image (a JSON object with --json); unreadable files on stderr, one line each."""
    from convae.applications import anomaly

    fitted = found.threshold
    for r in found.results:
        if r.verdict == anomaly.UNREADABLE:
            err.print(f"error: {shown(r.note)}", markup=False, highlight=False, soft_wrap=True)
        elif as_json:
            print(json.dumps({"path": r.path, "score": r.score, "score_kind": fitted.score,
                              "threshold": fitted.value, "verdict": r.verdict, "note": r.note,
                              "heatmap": r.heatmap}))
        else:
            note = f"  ({r.note})" if r.note else ""
            print(f"{shown(r.path)}  {r.score:.6g}  {r.verdict}{note}")
    scored = len(found.results) - len(found.unreadable)
    _log(f"{len(found.anomalous)} of {scored} image(s) anomalous; threshold {fitted.describe()}")
    for path in written:
        if path is not None:
            _log(f"wrote {path}")


def _print_evaluation(result: dict[str, Any]) -> None:
    print(f"{result['dataset']} test split: {result['normal_images']} normal "
          f"({', '.join(result['normal_classes'])}), {result['anomalous_images']} anomalous; "
          f"{result['score']} score")
    print(f"AUROC {result['auroc']:.4f}  average precision {result['average_precision']:.4f}")
    if "pixel_auroc" in result:
        print(f"pixel AUROC {result['pixel_auroc']:.4f}  AUPRO (FPR ≤ {result['aupro_fpr_limit']}) "
              f"{result['aupro']:.4f}")
    per = result.get("auroc_per_anomalous_class", {})
    if "pixel_auroc" in result and per:
        print(f"{'defect type':<16}{'image AUROC':>12}{'pixel AUROC':>13}{'AUPRO':>8}")
        for name, value in per.items():
            pix = result["pixel_auroc_per_anomalous_class"].get(name)
            pro = result["aupro_per_anomalous_class"].get(name)
            print(f"{name:<16}{value:>12.4f}{'' if pix is None else f'{pix:>13.4f}'}"
                  f"{'' if pro is None else f'{pro:>8.4f}'}")
    print(f"at threshold {result['threshold']:.6g}: F1 {result['f1']:.4f}  precision {result['precision']:.4f}  "
          f"recall {result['recall']:.4f}  normal flagged {100 * result['false_positive_rate']:.1f}%")
    for path in result.get("figures", []) + [result.get("file"), result.get("report")]:
        if path:
            print(f"wrote {path}")
