"""The report's anomaly-detection section: what ``convae detect --eval`` stored."""

from __future__ import annotations

from convae.report.html import escape, table
from convae.run import Run, report_section

EVAL_FILE = "detect-eval.json"


@report_section("anomaly", order=30)
def anomaly_section(run: Run) -> str | None:
    result = run.read_json(EVAL_FILE)
    if not result:
        return None
    fit = result.get("threshold_fit", {})
    return "\n".join([
        f"<h2>Anomaly detection ({escape(result.get('dataset'))} test split: "
        f"{result.get('normal_images')} normal ({escape(', '.join(result.get('normal_classes', [])))}), "
        f"{result.get('anomalous_images')} anomalous; {escape(result.get('score'))} score)</h2>",
        table([result], ["auroc", "average_precision", "threshold", "f1", "precision", "recall",
                         "false_positive_rate"]),
        f"<p>threshold: {escape(fit.get('method'))}"
        f"{' q=' + str(fit['quantile']) if fit.get('quantile') is not None else ''}"
        f"{' k=' + str(fit['k']) if fit.get('k') is not None else ''}"
        f" · fitted on {escape(fit.get('fitted_on', ''))}</p>",
    ])
