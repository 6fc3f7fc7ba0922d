"""The bar a long decode into the memory-mapped cache shows: drawn here, above the data layer,
which only counts (convae.data.folder_decode.Progress)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def decode_bar(label: str, total: int) -> Iterator[Any]:
    """A transient rich bar on stderr: ``decoding NAME ━━━━ 120/50,000 0:01:02``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("decoding {task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True, emoji=False), transient=True)
    with bar:
        job = bar.add_task(label, total=total)

        class Counter:
            def advance(self, count: int) -> None:
                bar.advance(job, count)

        yield Counter()
