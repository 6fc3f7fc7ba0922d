"""The report's rate–distortion section: what ``convae evaluate --rate`` stored."""

from __future__ import annotations

from convae.report.html import escape, table
from convae.run import Run, report_section


@report_section("rate", order=20)
def rate_section(run: Run) -> str | None:
    result = run.read_json("rate-test.json")
    if not result:
        return None
    return "\n".join([
        f"<h2>Rate–distortion ({result.get('images')} test images; see rate_distortion.png)</h2>",
        table(result.get("rows", []), ["codec", "setting", "bpp_per_image", "bpp_amortised", "psnr", "ssim",
                                       "header_bytes"]),
        f"<p>{escape(result.get('conventions', ''))}</p>",
    ])
