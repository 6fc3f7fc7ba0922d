"""The measuring half of benchmarks/codes.py: every codec on the same images, one file per image.

Kept apart from the training half so the script a reader opens first shows what is trained;
this file is what is counted, and how.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from convae.applications.codes import classic_codec_rows, rate_distortion, sample_images
from convae.applications.codes.codec import ImageCodec
from convae.applications.codes.codec_rate import codec_rows
from convae.data import load_splits
from convae.metrics import psnr_from_mse
from convae.run import Run

#: scikit-image's and scikit-learn's colour photographs; the codecs were trained on CIFAR-10 only.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
QUALITIES = (10, 30, 50, 75, 90)
#: WebP's lowest settings too: on 32×32 images even quality 10 is above 1 bpp.
CIFAR_WEBP_LOW = (0, 5)
BIG = (3000, 4000)


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """Bjøntegaard delta rate (%) of ``test`` against ``anchor``, both (bpp, PSNR) points.

    log-rate as a function of PSNR through each curve, integrated over the PSNR range both
    cover (piecewise cubic Hermite interpolation, as the JVET common test conditions now use
    instead of the original cubic fit); negative = fewer bits for the same quality.
    """
    from scipy.interpolate import PchipInterpolator

    def curve(points):
        points = sorted({(p, np.log(r)) for r, p in points if r > 0 and p is not None and np.isfinite(p)})
        return np.array([p for p, _ in points]), np.array([r for _, r in points])

    (pa, ra), (pt, rt) = curve(anchor), curve(test)
    low, high = max(pa.min(), pt.min()), min(pa.max(), pt.max())
    if len(pa) < 2 or len(pt) < 2 or high <= low:
        return None
    ia, it = PchipInterpolator(pa, ra).integrate(low, high), PchipInterpolator(pt, rt).integrate(low, high)
    return float((np.exp((it - ia) / (high - low)) - 1) * 100)


def photo_set() -> list[tuple[str, np.ndarray]]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [(name, getattr(data, name)()) for name in PHOTOS]
    sample = load_sample_images()
    photos += [(Path(name).stem, image) for name, image in zip(sample.filenames, sample.images)]
    return [(name, np.array(image[:, :, :3], dtype=np.uint8, copy=True)) for name, image in photos]


def _ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim

    to = lambda x: torch.from_numpy(np.array(x)).permute(2, 0, 1)[None].double().div(255)  # noqa: E731
    return float(ms_ssim(to(a), to(b), data_range=1.0))


def _pooled(pairs: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[int, float, float]:
    """(pixels, bpp, PSNR of the pooled MSE) of (original, decoded, bytes) per image."""
    pixels = sum(a.shape[0] * a.shape[1] for a, _, _ in pairs)
    squared = sum(float(((a.astype(np.float64) - b) ** 2).sum()) for a, b, _ in pairs)
    return pixels, 8 * sum(n for _, _, n in pairs) / pixels, psnr_from_mse(squared / (pixels * 3) / 255 ** 2)


def _score(label: str, setting: str, pairs: list[tuple[np.ndarray, np.ndarray, int]], seconds: tuple[float, float]
           ) -> dict[str, Any]:
    """bpp, PSNR (pooled MSE), mean MS-SSIM and speed of (original, decoded, bytes) per photo."""
    pixels, bpp, psnr = _pooled(pairs)
    return {"codec": label, "setting": setting, "bpp_per_image": bpp, "psnr": psnr,
            "ms_ssim": float(np.mean([_ms_ssim(a, b) for a, b, _ in pairs])),
            "encode_mp_per_s": pixels / 1e6 / max(seconds[0], 1e-9),
            "decode_mp_per_s": pixels / 1e6 / max(seconds[1], 1e-9)}


def _timed(photos: list[tuple[str, np.ndarray]], encode: Callable[[np.ndarray], bytes],
           decode: Callable[[bytes], np.ndarray]) -> tuple[list[tuple[np.ndarray, np.ndarray, int]], tuple[float, float]]:
    started = time.perf_counter()
    files = [encode(image) for _, image in photos]
    middle = time.perf_counter()
    decoded = [decode(data) for data in files]
    end = time.perf_counter()
    return [(image, back, len(data)) for (_, image), back, data in zip(photos, decoded, files)], (middle - started,
                                                                                                  end - middle)


def _pillow(fmt: str, quality: int, **extra: Any) -> tuple[Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray]]:
    """(encode, decode) of one Pillow format at one quality, one file per image."""
    def encode(image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=fmt, quality=quality, **extra)
        return buffer.getvalue()

    return encode, lambda data: np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def pillow_photo_rows(photos: list[tuple[str, np.ndarray]]) -> list[dict[str, Any]]:
    rows = []
    for codec, fmt, extra in (("JPEG", "JPEG", {}), ("WebP", "WEBP", {"method": 6}), ("AVIF", "AVIF", {})):
        for quality in QUALITIES:
            pairs, seconds = _timed(photos, *_pillow(fmt, quality, **extra))
            rows.append(_score(codec, f"quality {quality}", pairs, seconds))
    return rows


def webp_low_rows(images: Any) -> list[dict[str, Any]]:
    """WebP at qualities 0 and 5 on the CIFAR-10 sample, scored as classic_codec_rows scores."""
    arrays = [("", a) for a in images.images.permute(0, 2, 3, 1).numpy()]
    rows = []
    for quality in CIFAR_WEBP_LOW:
        _, bpp, psnr = _pooled(_timed(arrays, *_pillow("WEBP", quality, method=6))[0])
        rows.append({"codec": "WebP", "setting": f"quality {quality}", "bpp_per_image": bpp, "psnr": psnr,
                     "ssim": None})
    return rows


def codec_photo_row(codec: ImageCodec, photos: list[tuple[str, np.ndarray]], label: str) -> dict[str, Any]:
    to_tensor = lambda image: torch.from_numpy(image).permute(2, 0, 1).contiguous()  # noqa: E731
    pairs, seconds = _timed(photos, lambda image: codec.encode(to_tensor(image))[0],
                            lambda data: codec.decode(data, label).permute(1, 2, 0).numpy())
    return _score("convae", label, pairs, seconds)


def big_photo(codec: ImageCodec) -> dict[str, Any]:
    """A 4000×3000 photo (scikit-image's astronaut, resized) coded whole: time, size and peak memory."""
    import resource

    from skimage import data

    image = np.asarray(Image.fromarray(data.astronaut()).resize((BIG[1], BIG[0]), Image.LANCZOS))
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    data_bytes, _ = codec.encode(tensor)
    middle = time.perf_counter()
    back = codec.decode(data_bytes, "big").permute(1, 2, 0).numpy()
    end = time.perf_counter()
    squared = float(((image.astype(np.float64) - back) ** 2).mean())
    return {"size": f"{BIG[1]}×{BIG[0]}", "bytes": len(data_bytes), "bpp": 8 * len(data_bytes) / (BIG[0] * BIG[1]),
            "psnr": psnr_from_mse(squared / 255 ** 2), "encode_seconds": round(middle - started, 1),
            "decode_seconds": round(end - middle, 1),
            "peak_rss_mb": round(max(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024)}


def measure(args: Any, root: Path, costs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    _, test = load_splits("cifar10", data_dir=str(root))
    images = sample_images(test, args.images)
    photos = photo_set()
    cifar, photo_rows = [], pillow_photo_rows(photos)
    for name, cost in costs.items():
        run = Run.open(cost["run"])
        print(f"== measure {name}", flush=True)
        if cost["model"].startswith("codec"):
            codec = ImageCodec(run.model(), run.digest)
            for row in codec_rows(codec, images, f"{cost['model']} λ={cost['lam']:g}"):
                cifar.append({**row, "run": name, "ablation": bool(cost.get("ablation"))})
            if not cost.get("ablation"):
                photo_rows.append({**codec_photo_row(codec, photos, f"{cost['model']} λ={cost['lam']:g}"), "run": name})
        else:
            for row in rate_distortion(run, images, bits=(4, 6, 8))["rows"]:
                cifar.append({**row, "codec": "convae fixed-bit", "setting": f"conv z=256, {row['setting']}",
                              "run": name})
    cifar += classic_codec_rows(images, avif=True) + webp_low_rows(images)
    summary = summarise(cifar, photo_rows)
    headline = next(c for c in costs.values() if c["name"] == "codec-l0.013")
    summary["big_photo"] = big_photo(ImageCodec(Run.open(headline["run"]).model(), Run.open(headline["run"]).digest))
    return {"test_ids": [str(i) for i in images.ids or []], "settings": {"images": args.images, "photos": [n for n, _ in photos], "threads": args.threads,
                         "minutes": {"headline": args.minutes, "short": args.short, "ablation": args.ablation}},
            "runs": costs, "cifar10": cifar, "photos": photo_rows, "summary": summary}


def _points(rows: list[dict[str, Any]], codec: str, prefix: str = "") -> list[tuple[float, float]]:
    return [(r["bpp_per_image"], r["psnr"]) for r in rows
            if r["codec"] == codec and str(r["setting"]).startswith(prefix) and not r.get("ablation")]


def _psnr_at(points: list[tuple[float, float]], bpp: float) -> float | None:
    """The curve's PSNR at ``bpp`` by linear interpolation in log-rate (None outside the curve)."""
    points = sorted(points)
    for (r0, p0), (r1, p1) in zip(points, points[1:]):
        if r0 <= bpp <= r1:
            t = (np.log(bpp) - np.log(r0)) / (np.log(r1) - np.log(r0))
            return float(p0 + t * (p1 - p0))
    return None


def summarise(cifar: list[dict[str, Any]], photos: list[dict[str, Any]]) -> dict[str, Any]:
    webp_c, webp_p, avif_c = _points(cifar, "WebP"), _points(photos, "WebP"), _points(cifar, "AVIF")
    out: dict[str, Any] = {}
    for model in ("codec", "codec-hyper"):
        c, p = _points(cifar, "convae", model + " "), _points(photos, "convae", model + " ")
        out[model] = {"bd_rate_vs_webp_cifar10": bd_rate(webp_c, c), "bd_rate_vs_webp_photos": bd_rate(webp_p, p),
                      "bd_rate_vs_avif_cifar10": bd_rate(avif_c, c)}
    head = next((r for r in cifar if r.get("run") == "codec-l0.013"), None)
    if head:
        webp = _psnr_at(webp_c, head["bpp_per_image"])
        lowest = min(webp_c)
        out["webp_lowest_cifar10"] = {"bpp": lowest[0], "psnr": lowest[1]}
        out["headline"] = {"bpp": head["bpp_per_image"], "psnr": head["psnr"], "webp_psnr_at_same_bpp": webp,
                           "gain_db": None if webp is None else head["psnr"] - webp,
                           "avif_psnr_at_same_bpp": _psnr_at(avif_c, head["bpp_per_image"])}
    ablation = {r["run"]: {"bpp": r["bpp_per_image"], "psnr": r["psnr"]} for r in cifar if r.get("ablation")}
    out["ablation"] = ablation
    return out


def _f(value: Any, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def markdown(payload: dict[str, Any]) -> str:
    """codes.md: the verdicts first, then every row of both sets."""
    s, settings = payload["summary"], payload["settings"]
    head, big, peer = s.get("headline", {}), s.get("big_photo", {}), payload.get("compressai", {})
    lines = [f"# Learned codecs against JPEG, WebP and AVIF (commit {payload.get('commit', '?')})", "",
             f"CIFAR-10: {settings['images']} seeded test images; photos: {', '.join(settings['photos'])} at full size "
             "(the codecs saw only CIFAR-10's training split). bpp = 8 × bytes of one file per image / pixels, "
             "headers included; PSNR from the pooled MSE; BD-rate negative = fewer bits than the anchor.", "",
             f"- `codec` λ 0.013 ({settings['minutes']['headline']:g} min): {_f(head.get('bpp'), 3)} bpp at "
             f"{_f(head.get('psnr'))} dB; WebP at the same bpp {_f(head.get('webp_psnr_at_same_bpp'))} dB "
             f"(gain {_f(head.get('gain_db'), 2, ' dB')}); AVIF {_f(head.get('avif_psnr_at_same_bpp'))} dB "
             f"(— : outside that codec's curve; WebP's smallest CIFAR-10 files, quality 0, are "
             f"{_f(s.get('webp_lowest_cifar10', {}).get('bpp'), 3)} bpp at "
             f"{_f(s.get('webp_lowest_cifar10', {}).get('psnr'))} dB)."]
    for model in ("codec", "codec-hyper"):
        m = s.get(model, {})
        lines.append(f"- `{model}` BD-rate against WebP: CIFAR-10 {_f(m.get('bd_rate_vs_webp_cifar10'), 1, ' %')}, "
                     f"photos {_f(m.get('bd_rate_vs_webp_photos'), 1, ' %')}; against AVIF on CIFAR-10 "
                     f"{_f(m.get('bd_rate_vs_avif_cifar10'), 1, ' %')}.")
    for name, row in s.get("ablation", {}).items():
        lines.append(f"- ablation {name} ({settings['minutes']['ablation']:g} min, λ 0.013): {row['bpp']:.3f} bpp, "
                     f"{row['psnr']:.2f} dB")
    if big:
        lines.append(f"- {big['size']} photo, whole, `codec` λ 0.013: {big['bpp']:.3f} bpp, {big['psnr']:.2f} dB, encode "
                     f"{big['encode_seconds']} s, decode {big['decode_seconds']} s, peak RSS {big['peak_rss_mb']} MB.")
    if peer:
        lines.append(f"- CompressAI {peer.get('setting', '')}: " + (f"error: {peer['error']}" if "error" in peer else
                     f"{peer['bpp_per_image']:.3f} bpp (payload only), {peer['psnr']:.2f} dB after {peer['steps']} steps "
                     f"in {peer['trained_seconds']} s."))
    lines += ["", "## CIFAR-10", "", "| codec | setting | bpp | estimate | PSNR | SSIM | enc MP/s | dec MP/s |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in payload["cifar10"]:
        lines.append(f"| {r['codec']} | {r['setting']}{' (ablation)' if r.get('ablation') else ''} | "
                     f"{r['bpp_per_image']:.3f} | {_f(r.get('bpp_estimate'), 3)} | {_f(r['psnr'])} | {_f(r['ssim'], 3)} "
                     f"| {_f(r.get('encode_mp_per_s'))} | {_f(r.get('decode_mp_per_s'))} |")
    lines += ["", "## Photos", "", "| codec | setting | bpp | PSNR | MS-SSIM | enc MP/s | dec MP/s |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for r in payload["photos"]:
        lines.append(f"| {r['codec']} | {r['setting']} | {r['bpp_per_image']:.3f} | {_f(r['psnr'])} | "
                     f"{_f(r['ms_ssim'], 4)} | {_f(r['encode_mp_per_s'])} | {_f(r['decode_mp_per_s'])} |")
    lines += ["", "## Training", "", "| run | budget | trained | epochs | stopped on time |", "|---|---:|---:|---:|---|"]
    for name, cost in payload["runs"].items():
        lines.append(f"| {name} | {cost['minutes']:g} min | {cost.get('trained_seconds')} s | "
                     f"{cost.get('last_row', {}).get('epoch')} | {cost.get('stopped_on_time')} |")
    return "\n".join(lines) + "\n"
