"""The report's anomaly-detection section: what ``convae detect --eval`` stored."""

from __future__ import annotations

from convae.core.html import escape, figure, rows_table
from convae.run import Run

EVAL_FILE = "detect-eval.json"


def anomaly_section(run: Run) -> str | None:
    result = run.read_json(EVAL_FILE)
    if not result:
        return None
    fit = result.get("threshold_fit", {})
    inspection = "pixel_auroc" in result  # an inspection set: whole parts with defect masks
    heading = (f"<h2>Inspection ({escape(result.get('dataset'))} test split: {result.get('normal_images')} good "
               f"parts, {result.get('anomalous_images')} defective parts; {escape(result.get('score'))} score)</h2>"
               if inspection else
               f"<h2>Anomaly detection ({escape(result.get('dataset'))} test split: "
               f"{result.get('normal_images')} normal ({escape(', '.join(result.get('normal_classes', [])))}), "
               f"{result.get('anomalous_images')} anomalous; {escape(result.get('score'))} score)</h2>")
    gallery = ("the most and the least anomalous test parts, whole, with their defect maps over them (true "
               "defects outlined in green)" if inspection else "the most and the least anomalous test images, "
               "with their error maps over the input (true defects outlined in green)")
    return "\n".join([
        heading,
        rows_table(["AUROC", "average precision", "threshold", "F1", "precision", "recall", "normal flagged"],
                   [[f"{result['auroc']:.4f}", f"{result['average_precision']:.4f}", f"{result['threshold']:.4g}",
                     f"{result['f1']:.4f}", f"{result['precision']:.4f}", f"{result['recall']:.4f}",
                     f"{100 * result['false_positive_rate']:.2f} %"]]),
        *_pixel_rows(result),
        f"<p>threshold: {escape(fit.get('method'))}"
        f"{' q=' + str(fit['quantile']) if fit.get('quantile') is not None else ''}"
        f"{' k=' + str(fit['k']) if fit.get('k') is not None else ''}"
        f" · fitted on {escape(fit.get('fitted_on', ''))}</p>",
        figure(run.figures / "detect-gallery.png", gallery),
        figure(run.figures / "detect-roc.png", "ROC curve with the threshold's operating point"),
        figure(run.figures / "detect-scores.png", "scores of normal and anomalous test images"),
    ])


def _pixel_rows(result: dict) -> list[str]:
    """Inspection data (masks): pixel AUROC and AUPRO overall and per defect type, beside image AUROC."""
    if "pixel_auroc" not in result:
        return []
    images = result.get("auroc_per_anomalous_class", {})
    pixels = result.get("pixel_auroc_per_anomalous_class", {})
    regions = result.get("aupro_per_anomalous_class", {})
    rows = [[name, f"{images[name]:.4f}", f"{pixels.get(name, float('nan')):.4f}",
             f"{regions.get(name, float('nan')):.4f}"] for name in images]
    rows.append(["all", f"{result['auroc']:.4f}", f"{result['pixel_auroc']:.4f}", f"{result['aupro']:.4f}"])
    return [f"<p>Per defect type (AUPRO up to a false positive rate of {result.get('aupro_fpr_limit', 0.3)}):</p>",
            rows_table(["defect type", "image AUROC", "pixel AUROC", "AUPRO"], rows)]
