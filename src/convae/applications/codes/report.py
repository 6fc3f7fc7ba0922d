"""The report's rate–distortion section: what ``convae evaluate --rate`` stored."""

from __future__ import annotations

from convae.core.html import escape, figure, table
from convae.run import Run


def rate_section(run: Run) -> str | None:
    result = run.read_json("rate-test.json")
    if not result:
        return None
    return "\n".join([
        f"<h2>Rate–distortion ({result.get('images')} test images)</h2>",
        table(result.get("rows", []), ["codec", "setting", "bpp_per_image", "bpp_amortised", "psnr", "ssim",
                                       "header_bytes"] + (["bpp_estimate"] if any(
                                           "bpp_estimate" in r for r in result.get("rows", [])) else [])),
        "<p>PSNR in dB; bpp: bits per pixel position. " + escape(result.get("conventions", "")) + "</p>",
        figure(run.figures / "rate_distortion.png", "bits per pixel against PSNR and SSIM, next to PNG, JPEG, WebP (and AVIF for a codec)"),
    ])


def latent_section(run: Run) -> str | None:
    """The code space, where `convae show --latent` drew it."""
    parts = [figure(run.figures / name, caption) for name, caption in (
        ("latent_pca.png", "test codes, PCA, coloured by class"),
        ("latent_tsne.png", "test codes, t-SNE, coloured by class"),
        ("interpolations.png", "decoded along the line between two test codes"))]
    parts = [p for p in parts if p]
    return "<h2>The code space</h2>" + "".join(parts) if parts else None
