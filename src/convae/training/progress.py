"""What the loop shows and how it stops: the progress bar and the Ctrl-C request."""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class StopOnCtrlC:
    """Turn the first Ctrl-C into a request to stop at the next step boundary.

    A KeyboardInterrupt raised mid-step would leave a half-applied step (BatchNorm
    statistics updated, optimizer not stepped) that no checkpoint should capture. The
    second Ctrl-C falls back to the default handler and stops at once.
    """

    def __init__(self, enabled: bool = True) -> None:
        # Under torchrun the processes would stop at different steps and wait for each
        # other forever, so there Ctrl-C stops at once and the last checkpoint is kept.
        self.enabled = enabled
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __enter__(self) -> "StopOnCtrlC":
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class EpochProgress:
    """A rich progress bar showing loss and images/s, or nothing when disabled."""

    def __init__(self, console: Console, label: str, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled and console.is_terminal
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.5f}"),
            TextColumn("{task.fields[rate]:,.0f} img/s"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not self.enabled,
        )
        self.task = self.bar.add_task(label, total=total, completed=start, loss=float("nan"), rate=0.0)
        self.last = start

    def __enter__(self) -> Callable[[float, float], None]:
        self.bar.start()

        def advance(loss: float, rate: float) -> None:
            self.bar.update(self.task, loss=loss, rate=rate, advance=1)

        return advance

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


