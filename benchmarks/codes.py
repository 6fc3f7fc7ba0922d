"""Learned codecs with real bitstreams against JPEG, WebP, AVIF, the old fixed-bit codes and CompressAI.

Run: ``python benchmarks/codes.py --keep /tmp/convae-codec-runs`` (needs the CIFAR-10 PNG copy via
$CONVAE_DATA or ../shared/data; ``--train-only`` trains and stops, a second call measures).

Training, each run on CIFAR-10's 50,000 training images with ``--max-time`` (2 torch threads):

* ``codec`` (bmshj2018-factorized) and ``codec-hyper`` (bmshj2018-hyperprior) at four λ of
  CompressAI's ladder; λ 0.013 of ``codec`` for the full budget, the others for ``--short``;
* an ablation at λ 0.013: straight-through rounding for the synthesis (the default) against
  additive noise for both rate and synthesis, each for ``--ablation`` minutes;
* the old fixed-bit codes: the ``conv`` preset (latent 256) as benchmarks/fixed_codes.py trains it;
* CompressAI's own ``bmshj2018-factorized`` at λ 0.013, trained on the same images for the same
  wall time, in a virtual environment this script creates (benchmarks/.venv-compressai,
  git-ignored), never in convae's dependencies.

Measured on a seeded 1,000 CIFAR-10 test images and on the scikit-image photos none of the
models saw (full size): bpp = 8 × file bytes / pixels of one file per image (every header
counted), PSNR of the mean MSE over each set's pixels, SSIM (CIFAR) and MS-SSIM (photos),
encode and decode megapixels per second, and BD-rate against WebP (Bjøntegaard, with the
piecewise cubic interpolation of the current ITU/JVET practice).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import REPO, commit, data_root, machine, write_results

from convae.run import read_metrics
from convae.training import TrainConfig, Trainer

LAMBDAS = (0.0067, 0.013, 0.025, 0.0483)
HEADLINE = 0.013
RESULT = Path(__file__).parent / "results" / "codes.json"
TRAIN_TEST_IMAGES = 1000


def run_plan(full: float, short: float, ablation: float) -> list[dict[str, Any]]:
    """Every convae run the benchmark trains: name, model, λ, quantizer and minutes."""
    plan = [{"name": f"codec-l{HEADLINE:g}", "model": "codec", "lam": HEADLINE, "minutes": full}]
    plan += [{"name": f"codec-l{lam:g}", "model": "codec", "lam": lam, "minutes": short}
             for lam in LAMBDAS if lam != HEADLINE]
    plan += [{"name": f"codec-hyper-l{lam:g}", "model": "codec-hyper", "lam": lam, "minutes": short} for lam in LAMBDAS]
    plan += [{"name": f"ablation-{q}", "model": "codec", "lam": HEADLINE, "minutes": ablation, "quantizer": q,
              "ablation": True} for q in ("ste", "noise")]
    plan += [{"name": "fixed-conv-z256", "model": "conv", "model_args": {"latent_dim": 256, "width": 16, "levels": 2},
              "loss": "mse", "minutes": short, "lr_schedule": "cosine", "batch_size": 64, "lr": 2e-3}]
    return plan


def train(entry: dict[str, Any], root: Path, work: Path, threads: int) -> dict[str, Any]:
    """Train (or reuse) one run for its wall-time budget; what it cost."""
    from convae.data import load_splits

    run_dir = work / entry["name"]
    if (run_dir / "model.safetensors").exists():
        rows = read_metrics(run_dir)
        return {"run": str(run_dir), "reused": True, "epochs_done": len(rows), **_trained(run_dir)}
    minutes = entry["minutes"]
    is_codec = entry["model"].startswith("codec")
    # An epoch count the budget roughly allows, so the cosine schedule anneals by the end
    # (--max-time stops it on time either way).
    per_epoch = 50000 / (300 if is_codec else 2500)
    epochs = max(1, round(minutes * 60 / per_epoch))
    config = TrainConfig(
        dataset="cifar10", data_dir=str(root), model=entry["model"],
        model_args=entry.get("model_args") or ({"quantizer": entry["quantizer"]} if "quantizer" in entry else {}),
        loss=entry.get("loss") or f"rd:{entry['lam']:g}", epochs=epochs, lr_schedule=entry.get("lr_schedule", "cosine"),
        batch_size=entry.get("batch_size"), lr=entry.get("lr"), threads=threads, max_time=minutes * 60, seed=0)
    train_set, test_set = load_splits("cifar10", data_dir=str(root))
    started = time.perf_counter()
    Trainer(config, run_dir, progress=False, train_set=train_set,
            test_set=test_set.subset(range(0, 10000, 10000 // TRAIN_TEST_IMAGES))).fit()
    return {"run": str(run_dir), "reused": False, "wall_seconds": round(time.perf_counter() - started, 1),
            "epochs_planned": epochs, **_trained(run_dir)}


def _trained(run_dir: Path) -> dict[str, Any]:
    state = torch.load(run_dir / "state.pt", weights_only=True, map_location="cpu")
    rows = read_metrics(run_dir)
    return {"trained_seconds": round(float(state.get("trained_seconds", 0.0)), 1),
            "stopped_on_time": (run_dir / "time-limit.json").exists(),
            "last_row": {k: v for k, v in (rows[-1] if rows else {}).items() if isinstance(v, (int, float))}}


#: The peer's virtual environment (made here when missing; $CONVAE_COMPRESSAI_VENV points at one made before).
PEER_VENV = Path(os.environ.get("CONVAE_COMPRESSAI_VENV", REPO / "benchmarks" / ".venv-compressai"))
PEER_PACKAGES = ("torch==2.14.1", "torchvision==0.29.1", "compressai")


def compressai_peer(root: Path, test_ids: list[str], minutes: float, work: Path) -> dict[str, Any]:
    """CompressAI's own factorized model, same images and wall time, in its own virtual environment."""
    import subprocess

    python = PEER_VENV / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
        listing = work / "compressai-test.txt"
        listing.write_text("\n".join(str(root / "CIFAR10-png" / i) for i in test_ids))
        result = work / f"compressai-{minutes:g}m.json"
        if not result.exists():
            subprocess.run([str(python), str(REPO / "benchmarks" / "compressai_peer.py"),
                            str(root / "CIFAR10-png" / "train"), str(listing), str(minutes), str(HEADLINE),
                            str(result)], check=True)
        return {**json.loads(result.read_text()), "venv": str(PEER_VENV)}
    except (subprocess.CalledProcessError, OSError) as error:
        return {"codec": "CompressAI bmshj2018-factorized", "error": str(error)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, required=True, help="keep (and reuse) the run directories here")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of the headline run")
    parser.add_argument("--short", type=float, default=5.0, help="training budget of every other run")
    parser.add_argument("--ablation", type=float, default=3.0, help="training budget of each ablation run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--skip-compressai", action="store_true")
    parser.add_argument("--compressai-minutes", type=float, help="CompressAI's budget (default: --minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = data_root()
    args.keep.mkdir(parents=True, exist_ok=True)
    costs = {}
    for entry in run_plan(args.minutes, args.short, args.ablation):
        print(f"== train {entry['name']} ({entry['minutes']:g} min)", flush=True)
        costs[entry["name"]] = {**entry, **train(entry, root, args.keep, args.threads)}
        print(f"   {costs[entry['name']]}", flush=True)
    if args.train_only:
        return
    from codes_measure import measure

    payload = {"commit": commit(), **measure(args, root, costs)}
    if not args.skip_compressai:
        print("== CompressAI", flush=True)
        payload["compressai"] = compressai_peer(root, payload.pop("test_ids"), args.compressai_minutes or args.minutes,
                                                args.keep)
    payload.pop("test_ids", None)
    from codes_measure import markdown

    (RESULT.parent / "codes.md").write_text(markdown(payload), encoding="utf-8")
    payload["machine"] = machine()
    write_results("codes.json", payload)
    print(json.dumps(payload["summary"], indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "benchmarks"))
    main()
