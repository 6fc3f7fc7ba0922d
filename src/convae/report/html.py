"""Small HTML pieces every report section uses (escaped text, tables, numbers)."""

from __future__ import annotations

import base64
import html
from pathlib import Path


def escape(value: object) -> str:
    return html.escape(str(value))


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    return "—" if value is None else str(value)


def table(rows: list[dict], columns: list[str]) -> str:
    """``columns`` of each dict in ``rows``, one table row per dict."""
    return rows_table(columns, [[row.get(c) for c in columns] for row in rows])


def figure(path: Path, caption: str = "") -> str:
    """A PNG embedded in the page (the page stays one self-contained file), or '' when it is absent."""
    if not path.exists():
        return ""
    return png_figure(path.read_bytes(), caption or path.name, path.name)


def png_figure(data: bytes, caption: str, name: str = "") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return (f"<figure data-name='{html.escape(name)}'><img alt='{html.escape(caption)}' "
            f"src='data:image/png;base64,{encoded}'><figcaption>{html.escape(caption)}</figcaption></figure>")


def rows_table(header: list[str], rows: list[list[object]]) -> str:
    """A table of already formatted cells (the first column left-aligned)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
