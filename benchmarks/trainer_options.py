"""Which of the Trainer's optional speed settings win on this machine: --compile, --precision bf16, channels-last.

Times Trainer-equivalent steps (uint8 batch -> float, forward, loss, backward, fused Adam)
in one process, alternating the variants and taking the median of repeats; torch.compile's
one-off compile time is reported separately. fc and conv-pool (28×28, 32×32) try eager,
compile and bf16; draem (a --task inspect step at 128×128: both networks and DRAEM's loss) tries
eager, bf16, channels-last and both (what an inspect run does with --precision bf16 or auto).
Writes benchmarks/results/trainer_options.json; ``--models`` measures some models again and keeps
the other rows of the file. Each row names the commit and date it was measured at.

Run: ``python benchmarks/trainer_options.py [--steps 30 --repeats 3] [--models draem]``.
"""

from __future__ import annotations

from convae.core.openmp import set_openmp_wait_policy

set_openmp_wait_policy()  # first, before torch, as in the `convae` command

# isort: split
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from _common import RESULTS, commit, machine, write_results

from convae.models import build_model
from convae.training import default_threads


def _inspect_loss(out: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    from convae.training.inspect import inspect_loss

    masks = (x[:, :1] > 0.9).float()  # a fixed mask of about a tenth of the pixels
    return inspect_loss(out[0].float(), out[1].float(), x, masks)


MODELS = {"fc": ((1, 28, 28), 124, F.binary_cross_entropy), "conv-pool": ((3, 32, 32), 50, F.mse_loss),
          "draem": ((3, 128, 128), 8, _inspect_loss)}
VARIANTS = {"fc": ("eager", "compile", "bf16"), "conv-pool": ("eager", "compile", "bf16"),
            "draem": ("eager", "bf16", "channels-last", "channels-last+bf16")}


def stepper(name: str, variant: str):
    shape, batch, loss_fn = MODELS[name]
    torch.manual_seed(0)
    model = build_model(name, shape, {})
    if "channels-last" in variant:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    net = torch.compile(model) if variant == "compile" else model
    autocast = torch.autocast("cpu", torch.bfloat16, enabled="bf16" in variant)
    images = (torch.rand(batch * 8, *shape) * 255).to(torch.uint8)
    segment = {"segment": True} if name == "draem" else {}

    def step(i: int) -> None:
        x = images[(i % 8) * batch:(i % 8 + 1) * batch].float().div_(255)
        with autocast:
            out = net(x, **segment)
        loss = loss_fn(out, x) if name == "draem" else loss_fn(out.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()

    started = time.perf_counter()
    for i in range(3):
        step(i)
    return step, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS), help=f"some of {', '.join(MODELS)}")
    args = parser.parse_args()
    chosen = args.models.split(",")
    if any(name not in MODELS for name in chosen):
        parser.error(f"--models: choose from {', '.join(MODELS)}, got {args.models!r}")
    torch.set_num_threads(default_threads())
    torch.set_flush_denormal(True)
    rows = []
    for name in chosen:
        steppers, warmup = {}, {}
        for variant in VARIANTS[name]:
            steppers[variant], warmup[variant] = stepper(name, variant)
        times: dict[str, list[float]] = {v: [] for v in steppers}
        loads = []
        for repeat in range(args.repeats):
            for variant in (list(steppers) if repeat % 2 == 0 else list(steppers)[::-1]):
                started = time.perf_counter()
                for i in range(args.steps):
                    steppers[variant](i)
                times[variant].append((time.perf_counter() - started) / args.steps * 1000)
            loads.append(round(os.getloadavg()[0], 2))
        row = {"model": name, "commit": commit(), "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
               "ms_per_step_median": {v: round(statistics.median(t), 2) for v, t in times.items()},
               "ms_per_step_all": {v: [round(x, 2) for x in t] for v, t in times.items()},
               "first_3_steps_seconds": {v: round(s, 2) for v, s in warmup.items()}, "load_average_1min": loads}
        print(row, flush=True)
        rows.append(row)
    kept = RESULTS / "trainer_options.json"
    if kept.exists():  # rows of models not measured this time stay, with the machine they were measured on
        earlier = json.loads(kept.read_text())
        rows = [{**r, "measured": r.get("measured", earlier.get("machine", {}).get("date"))}
                for r in earlier.get("rows", []) if r["model"] not in chosen] + rows
    path = write_results("trainer_options.json", {"benchmark": "trainer_options",
                                                 "threads": torch.get_num_threads(), "steps": args.steps,
                                                 "rows": rows, "machine": machine()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
