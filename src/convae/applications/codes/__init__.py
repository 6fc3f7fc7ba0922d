"""Compact codes: encode images to code files, decode them back, measure the rate, map the code space.

The autoencoder's first use in the references is compression (784 values → 200, a 28×28
digit → a 7×7×1 code). One job per module: ``quantize`` (codes in and out of the model),
``format`` (the .npz and compact .cvc files), ``io`` (encode, decode, embed), ``rate``
(rate–distortion against PNG, JPEG and WebP), ``latent`` (the 2-D code map and
interpolations) and ``report`` (the report's rate section).
"""

from convae.applications.codes import report as _report  # noqa: F401 - registers the report section
from convae.applications.codes.format import BITS_CHOICES, CodeSet, SwitchLevel, read_codes, write_codes
from convae.applications.codes.io import (
    dataset_images,
    decode_file,
    embed_run,
    encode_run,
    file_images,
    sample_images,
)
from convae.applications.codes.latent import interpolation_pairs, project_2d, show_latent
from convae.applications.codes.quantize import (
    DECODE_BATCH,
    check_same_run,
    decode_codes,
    dequantize,
    encode_batches,
    flat_indices,
    half_scales,
    model_code,
    quantize,
    window_positions,
)
from convae.applications.codes.rate import (
    classic_codec_rows,
    evaluate_rate,
    rate_distortion,
    rate_figure,
    rate_table_rows,
)
from convae.core.images import to_uint8

__all__ = [
    "BITS_CHOICES", "DECODE_BATCH", "CodeSet", "SwitchLevel", "check_same_run", "classic_codec_rows",
    "dataset_images", "decode_codes", "decode_file", "dequantize", "embed_run", "encode_batches", "encode_run",
    "evaluate_rate", "file_images", "flat_indices", "half_scales", "interpolation_pairs", "model_code",
    "project_2d", "quantize", "rate_distortion", "rate_figure", "rate_table_rows", "read_codes", "sample_images",
    "show_latent", "to_uint8", "window_positions", "write_codes",
]
