"""The report's evaluation section: what ``convae evaluate`` stored for each split."""

from __future__ import annotations

from convae.report.html import table
from convae.run import Run, report_section


@report_section("evaluation", order=10)
def evaluation_section(run: Run) -> str | None:
    parts = []
    for split in ("test", "train"):
        result = run.read_json(f"eval-{split}.json")
        if result:
            keys = [k for k in ("mse", "rmse", "psnr", "ssim", "bce", "l1") if k in result]
            parts.append(f"<h2>Evaluation ({split} split, {result.get('images')} images)</h2>")
            parts.append(table([result], keys))
    return "\n".join(parts) or None
