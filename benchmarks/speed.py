"""Training speed: convae's Trainer against the reference loop, side by side in one run.

Run: ``python benchmarks/speed.py`` (also ``convae bench speed``; needs real MNIST and the
CIFAR-10 PNG copy via $CONVAE_DATA or ../shared/data). Writes benchmarks/results/speed.json
and benchmarks/results/speed.md. The measuring code lives in ``convae.bench.speed`` so the
installed command runs the same thing.
"""

from __future__ import annotations

from convae.core.openmp import set_openmp_wait_policy

set_openmp_wait_policy()  # first, before torch, as in the `convae` command

# isort: split
import argparse

from _common import RESULTS, data_root, machine, write_results

from convae.bench.speed import JOBS, markdown, plan, run_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default=",".join(job.name for job in JOBS), help="comma-separated job names")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for every job (default: SUITE_EPOCHS)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores)")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images (smoke test)")
    parser.add_argument("--quick", action="store_true",
                        help="a loaded-machine suite: fc 2 epochs; unpool, conv-pool, conv 1 epoch on 20k/10k/2k images")
    parser.add_argument("--name", default="speed", help="result file stem")
    args = parser.parse_args()
    names, epochs, subsets = plan([name for name in args.jobs.split(",") if name], args.quick, args.epochs)
    results = run_suite(names, data_dir=str(data_root()), epochs=epochs, subsets=subsets, threads=args.threads,
                        limit=args.limit)
    results["plan"] = "quick" if args.quick else "full"
    results["machine"] = machine()
    print(f"wrote {write_results(args.name + '.json', results)}")
    md = RESULTS / f"{args.name}.md"
    md.write_text(markdown(results), encoding="utf-8")
    print(f"wrote {md}")
    print(markdown(results))


if __name__ == "__main__":
    main()
