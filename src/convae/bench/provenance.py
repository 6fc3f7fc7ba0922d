"""Which code a benchmark result belongs to: every result file records it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def commit(repo: Path | None = None) -> str:
    """The short commit of ``repo`` (default: this source tree), "+dirty" when tracked files changed,
    "unknown" outside a git checkout (an installed wheel)."""
    where = str(repo or Path(__file__).resolve().parents[3])

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", where, *args], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
