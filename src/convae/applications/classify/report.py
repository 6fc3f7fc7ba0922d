"""The report's classification section: accuracy, accuracy per class, the confusion matrix."""

from __future__ import annotations

from convae.core.html import figure, rows_table
from convae.run import Run


def classification_section(run: Run) -> str | None:
    if run.config.kind != "classifier":
        return None
    result = run.read_json("eval-test.json")
    if not result:
        return None
    per_class = result.get("per_class_accuracy") or {}
    return "\n".join([
        f"<h2>Classification (test split, {result.get('images', 0):,} images)</h2>",
        "<table class='headline'><tr><th>accuracy</th><th>cross-entropy</th></tr>"
        f"<tr><td>{100 * result['accuracy']:.2f} %</td><td>{result['loss']:.4f}</td></tr></table>",
        "<h3>Per class</h3>" + rows_table(["class", "accuracy"], [[name, "—" if v is None else f"{100 * v:.2f} %"]
                                                                   for name, v in per_class.items()]),
        figure(run.figures / "confusion-test.png", "confusion matrix: rows are the true classes"),
    ])
