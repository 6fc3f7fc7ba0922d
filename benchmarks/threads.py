"""How many torch threads to use on a small, shared CPU machine.

OpenMP worker threads spin-wait for each other at every parallel region; when another
process holds one of the cores, a 2-thread step waits for a thread that is not running
and can end up many times slower than 1 thread. This script times the same training
steps (fc and conv-pool, the Trainer's own batch path) in fresh processes with 1 thread,
all cores, all cores with OMP_WAIT_POLICY=PASSIVE, and PASSIVE with a short spin first
(GOMP_SPINCOUNT, which libgomp honours over the policy), each alone and beside a busy
competitor process that holds one core, alternating and repeating; it writes
benchmarks/results/threads.json.

Run: ``python benchmarks/threads.py [--repeats 3] [--steps 40]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _common import commit, machine, write_results

WORKER = r"""
import json, sys, time, torch, torch.nn.functional as F
from convae.models import build_model
torch.set_flush_denormal(True)
threads, model_name, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
shape, batch, loss = {"fc": ((1, 28, 28), 124, F.binary_cross_entropy), "conv-pool": ((3, 32, 32), 50, F.mse_loss)}[model_name]
torch.manual_seed(0)
model = build_model(model_name, shape, {})
opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
images = (torch.rand(batch * 8, *shape) * 255).to(torch.uint8)
def step(i):
    x = images[(i % 8) * batch:(i % 8 + 1) * batch].float().div_(255)
    out = model(x); l = loss(out, x); opt.zero_grad(set_to_none=True); l.backward(); opt.step(); l.item()
for i in range(5): step(i)
started = time.perf_counter()
for i in range(steps): step(i)
print(json.dumps({"ms_per_step": (time.perf_counter() - started) / steps * 1000}))
"""

#: Spin-then-sleep budgets (GNU OpenMP iterations) tried between "sleep at once" (PASSIVE) and spinning.
SPINCOUNTS = (2_000, 20_000, 200_000)

SPIN = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass\n"


def measure(threads: int, policy: dict[str, str], model: str, steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(policy)
    out = subprocess.run([sys.executable, "-c", WORKER, str(threads), model, str(steps)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["ms_per_step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    variants = [("1 thread", 1, {}), (f"{cores} threads", cores, {}),
                (f"{cores} threads, OMP_WAIT_POLICY=PASSIVE", cores, passive)]
    variants += [(f"{cores} threads, PASSIVE + GOMP_SPINCOUNT={n}", cores, {**passive, "GOMP_SPINCOUNT": str(n)})
                 for n in SPINCOUNTS]
    rows = []
    # With the machine already loaded by others, a spinning competitor adds nothing to learn.
    phases = (False,) if os.getloadavg()[0] > cores else (False, True)
    for competitor in phases:
        spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if competitor else None
        try:
            time.sleep(1 if competitor else 0)
            for model in ("fc", "conv-pool"):
                times: dict[str, list[float]] = {label: [] for label, _, _ in variants}
                loads = []
                for repeat in range(args.repeats):
                    order = variants if repeat % 2 == 0 else variants[::-1]
                    for label, threads, policy in order:
                        times[label].append(measure(threads, policy, model, args.steps))
                    loads.append(round(os.getloadavg()[0], 2))
                row = {"model": model, "busy_competitor": competitor, "load_average_1min": loads,
                       "ms_per_step_median": {k: round(statistics.median(v), 2) for k, v in times.items()},
                       "ms_per_step_all": {k: [round(t, 2) for t in v] for k, v in times.items()}}
                print(json.dumps(row))
                rows.append(row)
        finally:
            if spinner is not None:
                spinner.kill()
    print(f"wrote {write_results('threads.json', {'benchmark': 'threads', 'commit': commit(), 'cores': cores, 'steps': args.steps, 'rows': rows, 'machine': machine()})}")


if __name__ == "__main__":
    main()
