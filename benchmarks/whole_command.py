"""The whole command against the whole tutorial script, as processes: start-up, data, training, the end.

Run: ``python benchmarks/whole_command.py [--rounds 2]`` (needs real MNIST via $CONVAE_DATA or
../shared/data). The seed-004 job: the fully connected 784-200-784 autoencoder, BCE, Adam,
batch 124, 10 epochs on MNIST. The tutorial side is the script its readers run
(``TUTORIAL`` below: torchvision's MNIST, ToTensor + flatten, a DataLoader, the loop, the
final loss printed). The convae side is ``convae train --dataset mnist --model fc`` (the
preset's defaults are that job), which also evaluates the test split and writes the run
directory. Both are timed from process start to exit, taking turns. Writes
benchmarks/results/whole_command.json with the commit; the target is convae ≥ 3× faster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import commit, data_root, machine, write_results

TUTORIAL = r"""
import sys, torch
from torch import nn
from torchvision import datasets, transforms
torch.manual_seed(0)
data = datasets.MNIST(sys.argv[1], train=True, download=False,
                      transform=transforms.Compose([transforms.ToTensor(), transforms.Lambda(torch.flatten)]))
loader = torch.utils.data.DataLoader(data, batch_size=124, shuffle=True)
model = nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 784), nn.Sigmoid())
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.BCELoss()
for epoch in range(10):
    total, seen = 0.0, 0
    for x, _ in loader:
        loss = loss_fn(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
        seen += len(x)
    print(f"epoch {epoch + 1} loss {total / seen:.4f}", flush=True)
"""


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{done.stderr[-2000:]}")
    return seconds, (done.stdout + done.stderr).strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = data_root()
    from convae.bench.speed import unpack_mnist

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["CONVAE_DATA"] = str(root)
    times: dict[str, list[float]] = {"tutorial": [], "convae": []}
    last: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        mnist = unpack_mnist(Path(tmp) / "data", str(root))
        for round_ in range(args.rounds):
            sides = ["tutorial", "convae"] if round_ % 2 == 0 else ["convae", "tutorial"]
            for side in sides:
                if side == "tutorial":
                    command = [sys.executable, "-c", TUTORIAL, str(mnist)]
                else:
                    command = [sys.executable, "-m", "convae", "train", "--dataset", "mnist", "--model", "fc",
                               "--no-progress", "--out", str(Path(tmp) / f"run-{round_}")]
                seconds, last[side] = timed(command, env)
                times[side].append(seconds)
                print(f"round {round_ + 1}: {side} {seconds:.1f} s  ({last[side]})", flush=True)
    tutorial, ours = statistics.median(times["tutorial"]), statistics.median(times["convae"])
    result = {"benchmark": "whole_command", "commit": commit(), "job": "seed-004: fc 784-200-784, BCE, Adam, "
              "batch 124, 10 epochs, MNIST", "seconds": times, "median_seconds": {"tutorial": tutorial, "convae": ours},
              "speedup": round(tutorial / ours, 2), "target": 3.0, "last_lines": last, "machine": machine()}
    print(json.dumps({k: result[k] for k in ("median_seconds", "speedup")}))
    print(f"wrote {write_results('whole_command.json', result)}")


if __name__ == "__main__":
    main()
