"""convae: convolutional image autoencoders you can train, inspect and put to work."""

import os as _os


def _openmp_wait_policy() -> None:
    """How OpenMP threads wait between parallel regions, chosen from the machine's load at start.

    Spinning (OpenMP's default) keeps a step of small ops fast on an idle machine: 2 threads
    took 6.7 ms per fc step spinning against 9.9 ms sleeping (PASSIVE). On a machine whose
    cores are busy with other processes, spinning waits for threads that are not running:
    17–30 ms per fc step against 10.8 ms sleeping, and once 5–25× slower
    (benchmarks/results/threads.json). So: sleep at once (PASSIVE) when the 1-minute load
    leaves less than half a core free, else spin a while first (GOMP_SPINCOUNT, which GNU
    OpenMP honours over the policy). It only takes effect when convae is imported before
    torch (the `convae` command always is); an explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
    """
    env = _os.environ
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        cores = len(_os.sched_getaffinity(0))
        busy = _os.getloadavg()[0] > cores - 0.5
    except (AttributeError, OSError):  # no load average (not Linux): the safe choice
        return
    if not busy:
        env["GOMP_SPINCOUNT"] = str(SPIN_WHEN_IDLE)


#: GNU OpenMP spin iterations before a waiting thread sleeps, on an idle machine.
SPIN_WHEN_IDLE = 200_000

_openmp_wait_policy()

__version__ = "0.1.0"
