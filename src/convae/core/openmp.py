"""How OpenMP threads wait between parallel regions, chosen from the machine's load at start.

Spinning (OpenMP's default) keeps a step of small ops fast on an idle machine: 2 threads
took 6.7 ms per fc step spinning against 9.9 ms sleeping (PASSIVE). On a machine whose
cores are busy with other processes, spinning waits for threads that are not running:
17–30 ms per fc step against 10.8 ms sleeping, and once 5–25× slower
(benchmarks/results/threads.json). So: sleep at once (PASSIVE) when other processes keep
half a core or more busy at start, else spin a while first (GOMP_SPINCOUNT, which GNU
OpenMP honours over the policy).

It only takes effect before torch is imported. The ``convae`` command and the training
package call it first; ``import convae`` alone does not, so the torch-free deployment
runtime (convae.runtime) never spends 50 ms sampling /proc/stat.
"""

from __future__ import annotations

import os
import time

#: GNU OpenMP spin iterations before a waiting thread sleeps, on an idle machine.
SPIN_WHEN_IDLE = 200_000


def set_openmp_wait_policy() -> None:
    """Choose the policy once per process; an explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT wins."""
    env = os.environ
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    busy = others_busy()
    if busy is not None and busy < 0.5:
        env["GOMP_SPINCOUNT"] = str(SPIN_WHEN_IDLE)


def others_busy(window: float = 0.05) -> float | None:
    """Cores kept busy by other processes right now (None where /proc/stat is not there).

    Two reads of /proc/stat ``window`` seconds apart while this process sleeps: the load
    average would still count a job that ended a minute ago (our own previous run, say).
    """

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, all but guest time

    try:
        idle0, total0 = sample()
        time.sleep(window)
        idle1, total1 = sample()
        cores = os.cpu_count() or 1
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return cores * (1 - (idle1 - idle0) / (total1 - total0))
