"""Fault injection: SIGKILL at any moment, full disk, two trainers, hostile and corrupt files.

The kill tests drive real ``convae train`` subprocesses on a tiny IDX dataset this file
writes itself (128 train / 32 test images of 16×16, 16 steps per epoch, 3 epochs, a
checkpoint every 5 steps). Each process is killed with SIGKILL, either by the test-only
hook ``CONVAE_FAULT=<point>:<n>`` (src/convae/faults.py: the narrow windows inside a
checkpoint write, between state and weights, inside evaluation) or at a seeded random
wall-clock moment, then resumed, possibly killed again, and finally run to the end. The
result must be bit-identical to one uninterrupted run, with every epoch in metrics.jsonl
exactly once, and after every kill each file in the run directory must load.
"""

from __future__ import annotations

import errno
import os
import pathlib
import pickle
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from convae.core.errors import RunError
from convae.run import load_model, load_state, load_weights, read_config, read_metrics

STEPS, EPOCHS, EVERY = 16, 3, 5  # 128 images / batch 8; --epochs; --checkpoint-every
TOTAL = STEPS * EPOCHS
KNOWN = {"config.json", "model.safetensors", "state.pt", "metrics.jsonl", ".lock", "metrics.csv", "tb"}
TRAIN_ARGS = [
    "train", "--dataset", "mnist", "--model", "conv-pool", "--model-arg", "channels=4,4",
    "--epochs", str(EPOCHS), "--batch-size", "8", "--seed", "3", "--deterministic", "--threads", "1",
    "--checkpoint-every", str(EVERY), "--no-progress",
]  # fmt: skip


# ----------------------------------------------------------------------------- fixtures


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x800 | array.ndim  # unsigned bytes, ndim dimensions
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny MNIST in torchvision's layout: <root>/MNIST/raw/*-ubyte."""
    root = tmp_path_factory.mktemp("faults-data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, count in (("train", 128), ("t10k", 32)):
        images = rng.integers(0, 256, (count, 16, 16), dtype=np.uint8)
        images[:, 4:12, 4:12] //= 4  # some structure, so the loss moves
        _write_idx(raw / f"{stem}-images-idx3-ubyte", images)
        _write_idx(raw / f"{stem}-labels-idx1-ubyte", rng.integers(0, 10, count, dtype=np.uint8))
    return root


def _env(data_dir: Path, fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CONVAE_FAULT"}
    env.update(OMP_NUM_THREADS="1", CONVAE_DATA=str(data_dir), PYTHONUNBUFFERED="1")
    if fault:
        env["CONVAE_FAULT"] = fault
    return env


def _start(run: Path, data_dir: Path, fault: str | None = None) -> subprocess.Popen:
    """Start `convae train` for ``run``: --resume once config.json exists, else the fresh command."""
    args = TRAIN_ARGS + ["--out", str(run)]
    if (run / "config.json").exists():
        args = ["train", "--out", str(run), "--resume", "--threads", "1", "--no-progress"]
    return subprocess.Popen(
        [sys.executable, "-m", "convae", *args], env=_env(data_dir, fault),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(run: Path, data_dir: Path) -> None:
    proc = _start(run, data_dir)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


@pytest.fixture(scope="module")
def reference(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run: what every killed-and-resumed run must end up as."""
    run = tmp_path_factory.mktemp("faults-ref") / "run"
    _finish(run, data_dir)
    return run


def _tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_weights(run / "model.safetensors")


def _assert_same_as_reference(run: Path, reference: Path) -> None:
    got, want = _tensors(run), _tensors(reference)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), f"{key} differs from the uninterrupted run"
    rows, ref_rows = read_metrics(run), read_metrics(reference)
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1)), "an epoch is missing or repeated"
    for row, ref in zip(rows, ref_rows):
        assert (row["train_loss"], row["test_loss"]) == (ref["train_loss"], ref["test_loss"])
    assert load_state(run / "state.pt")["epoch"] == EPOCHS
    assert sorted(p.name for p in run.iterdir()) == sorted(KNOWN), "temporary files were left behind"
    assert _csv_epochs(run) == list(range(1, EPOCHS + 1))  # the CSV log caught up with every epoch


def _assert_consistent(run: Path) -> None:
    """After a kill: every file that exists loads whole; nothing else but temporaries."""
    for path in run.iterdir():
        assert path.name in KNOWN or (path.name.startswith(".") and path.name.endswith(".tmp")), path
    if (run / "config.json").exists():
        read_config(run)
    position = _position(run)
    if (run / "model.safetensors").exists():
        load_weights(run / "model.safetensors")
    if (run / "metrics.jsonl").exists():
        epochs = [r["epoch"] for r in read_metrics(run)]
        assert epochs == list(range(1, len(epochs) + 1))
        assert len(epochs) <= position // STEPS
        # The CSV log is written after each checkpoint: whole, and at most the recorded epochs.
        assert _csv_epochs(run) == list(range(1, len(_csv_epochs(run)) + 1))
        assert len(_csv_epochs(run)) <= len(epochs)
    if (run / "tb").exists():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        EventAccumulator(str(run / "tb")).Reload()  # the event log of a killed process still reads


def _csv_epochs(run: Path) -> list[int]:
    import csv

    path = run / "metrics.csv"
    return [int(row["epoch"]) for row in csv.DictReader(path.open())] if path.exists() else []


def _position(run: Path) -> int:
    """Steps done according to state.pt (0 without one)."""
    if not (run / "state.pt").exists():
        return 0
    state = load_state(run / "state.pt")
    return state["epoch"] * STEPS + state["step"]


def _run_killed(run: Path, data_dir: Path, fault: str) -> None:
    """One process that must die by SIGKILL at ``fault``; then check what it left."""
    proc = _start(run, data_dir, fault)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"{fault} was never reached (exit {proc.returncode}): {err}"
    _assert_consistent(run)


def _remaining(run: Path) -> dict[str, int]:
    """How often each fault point is still reached by the next process on this run."""
    done = _position(run)
    checkpoints = [
        e * STEPS + s for e in range(EPOCHS) for s in range(1, STEPS + 1)
        if (s % EVERY == 0 and s < STEPS) or s == STEPS
    ]  # fmt: skip
    epochs_left = EPOCHS - done // STEPS
    later = sum(1 for c in checkpoints if c > done)
    return {
        "step": TOTAL - done,
        "write:state.pt": later,
        "write:model.safetensors": later,
        "evaluate": epochs_left,
        # a resume rewrites metrics.jsonl from state.pt before training on
        "write:metrics.jsonl": epochs_left + (1 if (run / "state.pt").exists() else 0),
        "write:config.json": 0 if (run / "config.json").exists() and (run / "state.pt").exists() else 1,
    }


# ----------------------------------------------------------------------------- SIGKILL


@pytest.mark.slow
def test_kills_in_the_narrow_windows_resume_bit_identical(tmp_path: Path, data_dir: Path, reference: Path) -> None:
    """Nine deterministic kills, each in a window a random kill would rarely hit."""
    run = tmp_path / "run"
    plan = [
        "write:config.json:1",  # before anything exists: the next start is a fresh one
        "step:3",  # config.json written, no checkpoint yet: --resume starts over from it
        "write:state.pt:1",  # temp state written, not renamed: there is still no state.pt
        "write:model.safetensors:2",  # state.pt at step 10 renamed, weights still at step 5
        "evaluate:1",  # inside epoch 1's evaluation: back to the step-15 checkpoint
        "write:metrics.jsonl:2",  # epoch 1's state and weights saved, its metrics row not yet
        "step:20",  # mid epoch 2
        "write:state.pt:4",  # the very last checkpoint, temp file written, not renamed
        # the resume rewrites metrics.csv (write 1); epoch 3 is checkpointed, its CSV row not yet (write 2)
        "write:metrics.csv:2",
    ]
    for fault in plan:
        _run_killed(run, data_dir, fault)
    _finish(run, data_dir)
    _assert_same_as_reference(run, reference)


def test_a_resume_catches_the_csv_log_up(tmp_path: Path, data_dir: Path, reference: Path) -> None:
    """Killed after the last checkpoint but before metrics.csv was rewritten: the CSV is an epoch short,
    the run is complete, and the resume that finds it complete still writes every epoch."""
    import shutil

    from convae.training.logs import write_csv

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    write_csv(run / "metrics.csv", read_metrics(run)[:-1])
    assert _csv_epochs(run) == list(range(1, EPOCHS))
    _finish(run, data_dir)
    assert _csv_epochs(run) == list(range(1, EPOCHS + 1))


@pytest.mark.slow
def test_kills_at_seeded_random_points_resume_bit_identical(tmp_path: Path, data_dir: Path, reference: Path) -> None:
    """Twelve kills at points and counts drawn from a fixed seed (failures reproduce)."""
    rng = random.Random(20261123)
    run = tmp_path / "run"
    kills = 0
    while kills < 12:
        choices = {point: n for point, n in _remaining(run).items() if n > 0}
        point = rng.choice(sorted(choices))
        # Small counts spread the kills over the whole run instead of racing to its end.
        _run_killed(run, data_dir, f"{point}:{rng.randint(1, max(1, choices[point] // 3))}")
        kills += 1
    assert kills == 12
    _finish(run, data_dir)
    _assert_same_as_reference(run, reference)


@pytest.mark.slow
def test_kills_at_random_wall_clock_moments_resume_bit_identical(
    tmp_path: Path, data_dir: Path, reference: Path
) -> None:
    """SIGKILL from outside at seeded random delays after training starts."""
    rng = random.Random(7)
    run = tmp_path / "run"
    kills = 0
    for _ in range(3):
        proc = _start(run, data_dir)
        line = proc.stderr.readline()  # "training ..." or "resuming ...": the loop is about to start
        assert line.startswith(("training", "resuming")), line
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=300)
        if proc.returncode == -signal.SIGKILL:
            kills += 1
            _assert_consistent(run)
        if _position(run) == TOTAL:
            break
    assert kills >= 1
    _finish(run, data_dir)
    _assert_same_as_reference(run, reference)


# ----------------------------------------------------------------------------- concurrency and disk


def test_a_second_trainer_on_a_locked_run_directory_refuses(tmp_path: Path, data_dir: Path, cli, monkeypatch) -> None:
    """Another process holds the lock: training refuses and writes nothing."""
    monkeypatch.setenv("CONVAE_DATA", str(data_dir))
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").touch()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time\n"
         "h = open(sys.argv[1], 'a+'); fcntl.flock(h.fileno(), fcntl.LOCK_EX); print('locked', flush=True); "
         "time.sleep(120)", str(run / ".lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = cli(*TRAIN_ARGS, "--out", run)
        assert code == 2
        assert "another convae process is writing this run directory" in err
        assert "Traceback" not in err
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The holder died without cleaning up; its lock died with it, the stale file does not block.
    code, _, err = cli(*TRAIN_ARGS, "--out", run, "--epochs", "1")
    assert code == 0, err
    assert read_metrics(run)[-1]["epoch"] == 1


def test_two_trainers_racing_for_one_directory_never_interleave(tmp_path: Path, data_dir: Path, cli, monkeypatch) -> None:
    """While a real trainer process runs, a second one on the same --out is refused."""
    monkeypatch.setenv("CONVAE_DATA", str(data_dir))
    run = tmp_path / "run"
    first = _start(run, data_dir, fault="evaluate:1")  # lives until it is killed in evaluation
    try:
        assert first.stderr.readline().startswith("training")
        code, _, err = cli("train", "--out", run, "--resume", "--threads", "1", "--no-progress")
        assert code == 2 and "another convae process is writing this run directory" in err
    finally:
        first.communicate(timeout=300)
    assert first.returncode == -signal.SIGKILL


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(
    tmp_path: Path, data_dir: Path, reference: Path, cli, monkeypatch
) -> None:
    monkeypatch.setenv("CONVAE_DATA", str(data_dir))
    run = tmp_path / "run"
    code, _, err = cli(*TRAIN_ARGS, "--out", run, "--epochs", "1")
    assert code == 0, err
    before = {name: (run / name).read_bytes() for name in ("state.pt", "model.safetensors", "metrics.jsonl")}

    real_write = pathlib.Path.write_bytes
    calls = []

    def disk_full(self: Path, data: bytes) -> int:
        if self.parent == run and self.name.endswith(".tmp"):
            calls.append(self.name)
            real_write(self, data[: len(data) // 2])  # the disk fills up half way through
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", disk_full)
    code, _, err = cli("train", "--out", run, "--resume", "--threads", "1", "--no-progress", "--epochs", str(EPOCHS))
    assert calls, "the simulated full disk was never hit"
    assert code == 2
    assert "disk full" in err and "previous version was kept" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ") and err.count("error") == 1
    after = {name: (run / name).read_bytes() for name in before}
    assert after == before
    assert sorted(p.name for p in run.iterdir()) == sorted(KNOWN)

    monkeypatch.setattr(pathlib.Path, "write_bytes", real_write)  # space freed: resume finishes the run
    code, _, err = cli("train", "--out", run, "--resume", "--threads", "1", "--no-progress", "--epochs", str(EPOCHS))
    assert code == 0, err
    _assert_same_as_reference(run, reference)


# ----------------------------------------------------------------------------- hostile and corrupt files


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("target", ["state.pt", "model.safetensors"])
@pytest.mark.parametrize("container", ["pickle", "torch.save"])
def test_a_hostile_pickle_is_refused_and_runs_nothing(
    tmp_path: Path, reference: Path, data_dir: Path, cli, monkeypatch, target: str, container: str
) -> None:
    monkeypatch.setenv("CONVAE_DATA", str(data_dir))
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists(), "the payload must really run code when unpickled"

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "model.safetensors", "state.pt", "metrics.jsonl"):
        (run / name).write_bytes((reference / name).read_bytes())
    marker = tmp_path / "pwned"
    if container == "pickle":
        (run / target).write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save({"model": _Payload(marker)}, run / target)

    if target == "state.pt":
        code, _, err = cli("train", "--out", run, "--resume", "--epochs", "4", "--threads", "1", "--no-progress")
        assert "refused to load training state" in err
    else:
        code, _, err = cli("evaluate", run)
        assert "not a readable safetensors file" in err
    assert code == 2
    assert f"{run / target}" in err and "Traceback" not in err
    assert not marker.exists(), "loading the checkpoint ran code"


def test_truncated_or_bit_flipped_weights_are_reported_not_loaded(tmp_path: Path, reference: Path, cli) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "model.safetensors"):
        (run / name).write_bytes((reference / name).read_bytes())
    good = (reference / "model.safetensors").read_bytes()
    rng = random.Random(11)
    damaged = [good[:n] for n in (0, 7, 8, 40, len(good) // 2, len(good) - 1)]
    for _ in range(24):  # flips in the header and in the tensor data alike
        flipped = bytearray(good)
        flipped[rng.randrange(len(good))] ^= 1 << rng.randrange(8)
        damaged.append(bytes(flipped))
    want = _tensors(reference)
    refused = 0
    for data in damaged:
        (run / "model.safetensors").write_bytes(data)
        try:
            model, _ = load_model(run)
        except RunError as error:
            assert "model.safetensors" in str(error)
            refused += 1
            continue
        # A flip in a metadata key no one reads may load: then the weights are untouched.
        assert all(torch.equal(value, want[key]) for key, value in model.state_dict().items())
    assert refused >= len(damaged) - 2
    code, _, err = cli("evaluate", run)
    assert code == 2 and err.startswith("error: ") and "model.safetensors" in err


def test_a_bit_flipped_or_truncated_training_state_is_refused(tmp_path: Path, reference: Path, cli) -> None:
    good = (reference / "state.pt").read_bytes()
    rng = random.Random(5)
    refused = 0
    for attempt in range(16):
        data = bytearray(good)
        if attempt % 4 == 0:
            data = data[: rng.randrange(len(good))]
        else:
            data[rng.randrange(len(good))] ^= 1 << rng.randrange(8)
        path = tmp_path / "state.pt"
        path.write_bytes(bytes(data))
        try:
            state = load_state(path)
        except RunError as error:
            assert str(error).startswith(str(path))
            refused += 1
            continue
        # A flip torch never reads (zip padding, a record name's case...) may load: then it
        # must be the very same state.
        want = load_state(reference / "state.pt")
        assert state["step"] == want["step"] and all(torch.equal(state["model"][k], want["model"][k]) for k in want["model"])
    assert refused >= 12


def test_a_state_from_another_model_is_refused_before_use(tmp_path: Path, reference: Path, data_dir: Path, cli, monkeypatch) -> None:
    monkeypatch.setenv("CONVAE_DATA", str(data_dir))
    other = tmp_path / "other"
    code, _, err = cli(*TRAIN_ARGS[:5], "--model-arg", "channels=6,4", *TRAIN_ARGS[7:], "--epochs", "1", "--out", other)
    assert code == 0, err
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "model.safetensors", "metrics.jsonl"):
        (run / name).write_bytes((reference / name).read_bytes())
    (run / "state.pt").write_bytes((other / "state.pt").read_bytes())
    code, _, err = cli("train", "--out", run, "--resume", "--epochs", "4", "--threads", "1", "--no-progress")
    assert code == 2
    assert "state.pt: tensor" in err and "the model needs" in err
    assert read_metrics(run) == read_metrics(reference)  # nothing was written


# ----------------------------------------------------------------------------- numerical faults


def test_nan_loss_from_the_cli_names_epoch_and_step_and_keeps_the_checkpoint(
    tmp_path: Path, data_dir: Path, cli, monkeypatch
) -> None:
    """The loss turns NaN at step 7 of epoch 2: stop there, keep the step-5 checkpoint."""
    import convae.training.tasks as train_module

    monkeypatch.setenv("CONVAE_DATA", str(data_dir))
    run = tmp_path / "run"
    code, _, err = cli(*TRAIN_ARGS, "--out", run, "--epochs", "1")
    assert code == 0, err
    real_loss = train_module.loss_function
    calls = []

    def poisoned(name):
        fn = real_loss(name)

        def loss(output, target):
            calls.append(1)
            return fn(output, target) * (float("nan") if len(calls) == 7 else 1.0)

        return loss

    monkeypatch.setattr(train_module, "loss_function", poisoned)
    code, _, err = cli("train", "--out", run, "--resume", "--epochs", "2", "--threads", "1", "--no-progress")
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert line == (f"error: loss became nan at epoch 2, step 7; kept the last good checkpoint in {run}; "
                    "try a lower --lr (now 0.001)")
    state = load_state(run / "state.pt")
    assert (state["epoch"], state["step"]) == (1, 5)
    load_model(run)  # whole, finite weights (load_model refuses NaN/Inf tensors)
    assert [r["epoch"] for r in read_metrics(run)] == [1]
