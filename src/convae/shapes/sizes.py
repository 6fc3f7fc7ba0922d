"""Sizes typed by users: '28', '28x28', '1x28x28' (also with '×' or ',')."""

from __future__ import annotations

from convae.core.errors import ConvaeError, ModelError

__all__ = ["parse_size", "parse_hw"]


def parse_size(text: str, *, what: str = "size") -> tuple[int, ...]:
    """Parse '28', '28x28' or '1x28x28' (also with '×' or ',') into integers."""
    cleaned = text.strip().lower().replace("×", "x").replace(",", "x")
    try:
        values = tuple(int(part) for part in cleaned.split("x"))
    except ValueError:
        raise ConvaeError(f"{what} {text!r} is not a size like 28 or 28x28") from None
    if not values or any(v < 1 for v in values):
        raise ConvaeError(f"{what} {text!r} must be positive integers like 28x28")
    return values


def parse_hw(text: str, *, what: str = "size") -> tuple[int, int]:
    """'28' → (28, 28); '14x20' → (14, 20); anything else is a one-line error."""
    values = parse_size(text, what=what)
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) == 2:
        return (values[0], values[1])
    raise ConvaeError(f"{what} {text!r} must be H or HxW")


def parse_input_shape(text: str | None, default: tuple[int, int, int] = (1, 28, 28)) -> tuple[int, int, int]:
    """'1x28x28' → (1, 28, 28); '28x28' or '28' keep the default channel count."""
    if text is None:
        return default
    values = parse_size(text, what="--input")
    if len(values) == 1:
        return (default[0], values[0], values[0])
    if len(values) == 2:
        return (default[0], values[0], values[1])
    if len(values) == 3:
        return (values[0], values[1], values[2])
    raise ModelError(f"--input {text!r} must be CxHxW, HxW or H (e.g. 1x28x28)")
