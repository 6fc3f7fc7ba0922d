"""What the loop shows and how it stops: the progress bar and the Ctrl-C request."""

from __future__ import annotations

import signal
import threading
import time
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


class RunProgress:
    """What a training run shows while it trains: the same in every training verb.

    On a terminal, one bar for the whole run (every epoch's steps) with the epoch, the loss,
    images/s and the time left for the run. In a log file (stderr not a terminal), a plain
    line at least every ``every`` seconds instead. Before the first step there is no loss
    to show, so none is shown.
    """

    def __init__(self, console: Console, epochs: int, steps_per_epoch: int, done: int, enabled: bool,
                 say: Callable[[str], None], every: float = 30.0) -> None:
        self.epochs, self.steps = epochs, max(steps_per_epoch, 1)
        self.total, self.done = epochs * self.steps, done
        self.terminal = enabled and console.is_terminal
        self.lines = enabled and not console.is_terminal
        self.say, self.every = say, every
        self.started = self.last_line = time.monotonic()
        self.start_done = done
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("run ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not self.terminal,
        )
        self.task = self.bar.add_task(self._label(done), total=self.total, completed=done, loss="", rate="")

    def _label(self, done: int) -> str:
        return f"epoch {min(done // self.steps + 1, self.epochs)}/{self.epochs}"

    def update(self, done: int, loss: float, rate: float) -> None:
        """``done`` steps of the run are finished; ``loss`` is the last step's."""
        self.done = done
        self.bar.update(self.task, completed=done, description=self._label(done), loss=f"loss {loss:.5f}",
                        rate=f"{rate:,.0f} img/s")
        now = time.monotonic()
        if self.lines and now - self.last_line >= self.every:
            self.last_line = now
            per_step = (now - self.started) / max(done - self.start_done, 1)
            left = per_step * (self.total - done)
            self.say(f"{self._label(done)}  step {done - (done - 1) // self.steps * self.steps}/{self.steps}  "
                     f"loss {loss:.5f}  {rate:,.0f} img/s  run ETA {_duration(left)}")

    def __enter__(self) -> "RunProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
