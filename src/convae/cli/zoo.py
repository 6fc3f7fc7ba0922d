"""`convae zoo`: the bundled pretrained models, each usable as zoo:NAME wherever a run directory goes."""

from __future__ import annotations

import json
from typing import Optional

import typer

from convae.cli._app import app, out, print_table


def _figures(card: dict) -> str:
    return "; ".join(f"{key} {value}" for key, value in (card.get("figures") or {}).items()) or "-"


@app.command()
def zoo(
    name: Optional[str] = typer.Argument(None, help="show one bundled model's whole card (NAME or zoo:NAME)"),
) -> None:
    """List the bundled pretrained models (no download: they ship inside convae).

    \b
    Each one is used as zoo:NAME wherever a run directory goes, for example
      convae denoise zoo:photo-denoise my.jpg --out clean/
    """
    from convae.run.zoo import PREFIX, zoo_card, zoo_names

    if name is not None:
        card = zoo_card(name[len(PREFIX):] if name.startswith(PREFIX) else name)
        out.print(json.dumps(card, indent=2, ensure_ascii=False), markup=False, highlight=False)
        return
    rows = []
    for entry in zoo_names():
        card = zoo_card(entry)
        rows.append((f"zoo:{entry}", card.get("task", "-"), card.get("summary", "-"), card.get("trained_on", "-"),
                     _figures(card), card["sha256"][:12]))
    print_table("bundled models (convae zoo NAME shows one card; docs/zoo.md)",
                ("name", "task", "what", "trained on", "measured", "sha256"), rows)
