"""Test-only fault injection: make the process SIGKILL itself at a named point.

The crash-safety tests (tests/test_faults.py) must hit narrow windows on purpose: inside
a checkpoint write between the temporary file and its rename, between the state and the
weights of one checkpoint, inside evaluation. Random wall-clock kills reach those windows
only by luck, so the code calls :func:`fault_point` there and the environment variable

    CONVAE_FAULT=<point>:<n>      e.g. CONVAE_FAULT=write:model.safetensors:2

kills the process (SIGKILL, no cleanup, exactly like the OOM killer) the ``n``-th time it
reaches ``<point>``. Points: ``step`` (after an optimizer step), ``evaluate`` (inside the
per-epoch evaluation) and ``write:<file name>`` (a temporary file written and fsynced, not
yet renamed over ``<file name>``). Unset, the check is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "CONVAE_FAULT"
_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process if ``$CONVAE_FAULT`` names this point and its count is reached."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, count = spec.rpartition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if count.isdigit() and _hits[name] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)
