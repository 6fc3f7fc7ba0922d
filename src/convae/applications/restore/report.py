"""The report's restoration section: the model next to the corrupted input and a classical baseline."""

from __future__ import annotations

from convae.applications.restore.evaluate import comparison_rows
from convae.core.html import escape, figure, rows_table
from convae.run import Run


def restoration_section(run: Run) -> str | None:
    if run.config.task not in ("denoise", "colorize"):
        return None
    result = run.read_json("eval-test.json")
    parts = [f"<h2>{'Denoising' if run.config.task == 'denoise' else 'Colorization'}</h2>"]
    if result and "baseline_psnr" in result:
        parts.append(f"<p>{escape(result.get('corruption', ''))} · {result.get('images', 0):,} test images</p>")
        parts.append(rows_table(["restored by", "MSE", "PSNR", "SSIM"],
                                [[what, f"{mse:.5f}", f"{psnr:.2f} dB", f"{ssim:.4f}"]
                                 for what, mse, psnr, ssim in comparison_rows(result)]))
    parts.append(figure(run.figures / "restorations.png", "before (the model's input), after, and the target"))
    return "\n".join(parts) if len(parts) > 1 else None
