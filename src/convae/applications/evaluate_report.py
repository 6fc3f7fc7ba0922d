"""The report's evaluation section: the headline numbers with units, the error per class, reconstructions."""

from __future__ import annotations

from convae.core.html import figure, rows_table
from convae.run import Run

#: (key, label, how to print it): every number carries its unit or its scale.
HEADLINE = (("rmse", "RMSE", "{:.4f}"), ("psnr", "PSNR", "{:.2f} dB"), ("ssim", "SSIM", "{:.4f}"),
            ("mse", "MSE", "{:.5f}"), ("bce", "BCE", "{:.4f}"), ("l1", "L1", "{:.4f}"))


def evaluation_section(run: Run) -> str | None:
    if run.config.kind == "classifier":
        return None
    parts = []
    for split in ("test", "train"):
        result = run.read_json(f"eval-{split}.json")
        if not result:
            continue
        present = [(label, form.format(result[key])) for key, label, form in HEADLINE if result.get(key) is not None]
        parts.append(f"<h2>Reconstruction ({split} split, {result.get('images'):,} images)</h2>")
        parts.append("<table class='headline'><tr>" + "".join(f"<th>{label}</th>" for label, _ in present)
                     + "</tr><tr>" + "".join(f"<td>{value}</td>" for _, value in present) + "</tr></table>")
        parts.append("<p>pixels in [0, 1]; every error is a mean per pixel</p>")
        per_class = result.get("per_class_mse") or {}
        if len(per_class) > 1:
            parts.append("<h3>Per class</h3>" + rows_table(["class", "MSE", "RMSE"],
                                                             [[name, f"{v:.5f}", f"{v ** 0.5:.4f}"]
                                                              for name, v in per_class.items()]))
    for name, caption in (("reconstructions-per-class.png", "one test image of each class: original, code, "
                                                            "reconstruction"),
                          ("reconstructions.png", "originals, codes and reconstructions of test images")):
        shown = figure(run.figures / name, caption)
        if shown:
            parts.append(shown)
    return "\n".join(parts) or None
