"""Small HTML pieces every report section uses (escaped text, tables, numbers)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

#: The one stylesheet of every page convae writes (the report, compare).
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
    "td:first-child,th:first-child{text-align:left}.summary{background:#f3f6fa;padding:.8em 1em;border-radius:6px}"
    ".headline td{font-size:1.15em}img{max-width:100%}figure{margin:1em 0}figcaption{color:#666;font-size:.9em}"
    "pre{background:#f6f6f6;padding:1em;overflow:auto}details{margin:1em 0}"
)


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
