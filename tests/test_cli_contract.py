"""The command-line contract: every verb, the same rules (issue "A command line that never surprises").

A table runs every verb with a wrong path, a bad value and -h; then one test per rule:
data paths, resume, failed starts, no-op flags, classes, file verbs, run kinds, output,
sizes, progress and configs. Everything goes through the real entry point in-process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import bar_image, write_bars
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ("--threads", "1", "--no-progress", "--epochs", "1", "--batch-size", "16")


def _bars(root: Path, train: int = 24, test: int = 8) -> Path:
    return write_bars(root, {"train": train, "test": test}, seed=3)


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bars(tmp_path_factory.mktemp("contract-bars"))


def _run_cli(args: list[str]) -> tuple[int, str, str]:
    """The real entry point, for module fixtures (the ``cli`` fixture is per test)."""
    import contextlib
    import io
    import sys

    from convae.cli import main

    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["convae", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 0
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(bars: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny run of each kind: reconstruction (with normal classes), denoise, classifier."""
    where = tmp_path_factory.mktemp("contract-runs")
    made = {"ae": where / "ae", "denoise": where / "denoise", "classifier": where / "cls"}
    for args in (
        ["train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--normal-classes", "horizontal",
         "--out", made["ae"], *FAST],
        ["train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--task", "denoise", "--out",
         made["denoise"], *FAST],
        ["classify", "train", "--dataset", f"folder:{bars}", "--model", "cnn", "--out", made["classifier"], *FAST],
    ):
        code, _, err = _run_cli([str(a) for a in args])
        assert code == 0, err
    return made


def _one_error_line(code: int, err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err and "╭" not in err, err
    return lines[-1]


# -- the table: every verb, a wrong path, a bad value, -h ------------------------------------------------

NOWHERE = "/nonexistent/convae-run"
VERBS = {
    # verb: (args with a wrong path, args with a bad value given a run of the right kind)
    "train": (["--dataset", "folder:/nonexistent/photos"], ["--epochs", "one"]),
    "evaluate": ([NOWHERE], ["{ae}", "--split", "nope"]),
    "show": ([NOWHERE], ["{ae}", "-n", "0"]),
    "report": ([NOWHERE], ["{ae}", "--frobnicate"]),
    "compare": ([NOWHERE, NOWHERE], ["{ae}", "{classifier}", "--images", "six"]),
    "models": (["--frobnicate"], ["extra-argument"]),
    "solve-deconv": (["7"], ["seven", "14"]),
    "shapes": ([NOWHERE], ["conv", "--input", "1x0x5"]),
    "denoise": ([NOWHERE, "x.png", "--out", "o"], ["{denoise}", "/nonexistent/in.png", "--out", "{tmp}/o",
                                                    "--device", "tpu"]),
    "colorize": ([NOWHERE, "x.png", "--out", "o"], ["{denoise}", "{tmp}", "--out", "{tmp}/o"]),
    "reconstruct": ([NOWHERE, "x.png", "--out", "o"], ["{ae}", "{tmp}", "--out", "{tmp}/o", "--device", "tpu"]),
    "detect": ([NOWHERE, "--eval"], ["{ae}", "--eval", "--score", "nope"]),
    "encode": ([NOWHERE, "--dataset", "mnist", "--out", "c.npz"], ["{ae}", "--dataset", "mnist-sample",
                                                                      "--out", "{tmp}/c.npz", "--bits", "5"]),
    "decode": ([NOWHERE, "c.cvc", "--out", "o"], ["{ae}", "{tmp}/missing.cvc", "--out", "{tmp}/o"]),
    "embed": ([NOWHERE, "--out", "e.npz"], ["{ae}", "--out", "{tmp}/e.txt"]),
    "export": ([NOWHERE, "--out", "m.onnx"], ["{ae}", "--out", "{tmp}/m.onnx", "--what", "logits"]),
    "classify train": (["--dataset", "folder:/nonexistent/photos"], ["--optimizer", "rmsprop"]),
    "classify evaluate": ([NOWHERE], ["{classifier}", "--split", "nope"]),
    "classify predict": ([NOWHERE, "x.png"], ["{classifier}", "/nonexistent/x.png"]),
    "classify probe": ([NOWHERE], ["{ae}", "--max-iter", "0"]),
    "bench speed": (["--data-dir", "/nonexistent/data"], ["--jobs", "nope"]),
    "zoo": (["no-such-model"], ["--frobnicate"]),
}


@pytest.mark.parametrize("verb", sorted(VERBS))
@pytest.mark.parametrize("case", ["wrong path", "bad value", "-h"])
def test_every_verb_keeps_the_contract(cli, runs: dict[str, Path], tmp_path: Path, verb: str, case: str) -> None:
    if case == "-h":
        code, out, err = cli(*verb.split(), "-h")
        assert code == 0 and out.startswith(f"Usage: convae {verb}"), (out, err)
        assert "<bool>" not in out and "{run_dir}" not in out.lower() and "╭" not in out
        return
    fill = {"ae": runs["ae"], "denoise": runs["denoise"], "classifier": runs["classifier"], "tmp": tmp_path}
    args = [a.format(**fill) for a in VERBS[verb][0 if case == "wrong path" else 1]]
    code, out, err = cli(*verb.split(), *args)
    _one_error_line(code, err)


def test_the_table_covers_every_verb() -> None:
    import typer

    from convae.cli import app

    def leaves(command, prefix=""):
        for name, sub in getattr(command, "commands", {}).items():
            yield from leaves(sub, f"{prefix}{name} ") if getattr(sub, "commands", None) else [f"{prefix}{name}"]

    assert sorted(leaves(typer.main.get_command(app))) == sorted(VERBS)


def test_main_verbs_show_an_example(cli) -> None:
    for verb in ("train", "evaluate", "show", "detect", "encode", "reconstruct", "classify train", "classify predict"):
        code, out, _ = cli(*verb.split(), "--help")
        assert code == 0 and "Example" in out, verb


def test_version_and_bare_command(cli) -> None:
    from convae import __version__

    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"convae {__version__}"
    code, out, _ = cli()
    assert code == 0 and "Usage: convae" in out and "convae train --report" in out


# -- data -------------------------------------------------------------------------------------------------


def test_relative_folder_is_stored_absolute_and_found_from_anywhere(cli, tmp_path: Path, monkeypatch) -> None:
    _bars(tmp_path / "data" / "tiles", 8, 4)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("train", "--dataset", "folder:data/tiles", "--model", "conv-pool", "--out", "runs/r", *FAST)
    assert code == 0, err
    spec = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())["dataset"]["spec"]
    assert spec == f"folder:{(tmp_path / 'data' / 'tiles').resolve()}"
    monkeypatch.chdir("/")
    code, out, err = cli("evaluate", tmp_path / "runs" / "r", "--json")
    assert code == 0, err
    assert json.loads(out)["images"] == 8


def test_moved_data_is_found_again_with_dataset_and_data_dir(cli, tmp_path: Path) -> None:
    _bars(tmp_path / "before", 8, 4)
    code, _, err = cli("train", "--dataset", f"folder:{tmp_path / 'before'}", "--model", "conv-pool",
                       "--out", tmp_path / "r", *FAST)
    assert code == 0, err
    shutil.move(tmp_path / "before", tmp_path / "after")
    code, _, err = cli("evaluate", tmp_path / "r")
    assert "before" in _one_error_line(code, err)
    for verb in ("evaluate", "show"):
        code, _, err = cli(verb, tmp_path / "r", "--dataset", f"folder:{tmp_path / 'after'}")
        assert code == 0, (verb, err)


def test_data_dir_is_accepted_by_every_verb_that_reads_a_runs_data(cli) -> None:
    for verb in ("train", "evaluate", "show", "detect", "encode", "embed", "classify train", "classify evaluate",
                 "classify probe"):
        code, out, _ = cli(*verb.split(), "-h")
        assert code == 0 and "--data-dir" in out, verb


# -- resume -----------------------------------------------------------------------------------------------


def test_resume_is_the_same_command_plus_resume(cli, bars: Path, tmp_path: Path) -> None:
    command = ["train", "--dataset", f"folder:{bars}", "--model", "unpool", "--out", tmp_path / "r", *FAST]
    code, _, err = cli(*command)
    assert code == 0, err
    code, _, err = cli(*command, "--resume")  # complete: says so, exit 0
    assert code == 0 and "already complete" in err, err
    line = _one_error_line(*cli(*command, "--resume", "--lr", "0.5")[::2])
    assert "--lr 0.5 (this run: 0.002)" in line
    line = _one_error_line(*cli(*command, "--resume", "--model-arg", "maps=3")[::2])
    assert "--model-arg maps=3 (this run: maps=1)" in line
    code, _, err = cli(*[a if a != "1" else "2" for a in command], "--resume")  # --epochs 2 extends the run
    assert code == 0 and "resuming" in err, err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["training"]["epochs"] == 2
    rows = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]


def test_classifier_resume_follows_the_same_rules(cli, bars: Path, tmp_path: Path) -> None:
    command = ["classify", "train", "--dataset", f"folder:{bars}", "--out", tmp_path / "c", *FAST]
    assert cli(*command)[0] == 0
    code, _, err = cli(*command, "--resume")
    assert code == 0 and "already complete" in err
    line = _one_error_line(*cli(*command, "--resume", "--seed", "3")[::2])
    assert "--seed 3 (this run: 0)" in line


# -- failed starts ----------------------------------------------------------------------------------------


def test_a_start_without_a_checkpoint_never_blocks_the_name(cli, bars: Path, tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text('{"model": {"name": "conv"}}')  # what a failed start leaves
    code, _, err = cli("train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--out", tmp_path / "r", *FAST)
    assert code == 0, err
    assert (tmp_path / "r" / "model.safetensors").exists()


def test_a_step_that_cannot_fit_is_refused_with_a_batch_that_would(cli, bars: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    import convae.training.memory as memory
    from convae.models import build_model

    build = lambda: build_model("fc", (1, 128, 128))  # noqa: E731
    one, many = memory.step_bytes(build, (1, 128, 128), 1), memory.step_bytes(build, (1, 128, 128), 33)
    free = int(many / memory.MARGIN) + 1  # room for a batch of 33, not of 512
    monkeypatch.setattr(memory, "free_memory", lambda device: free)
    line = _one_error_line(*cli("train", "--dataset", f"folder:{bars}", "--model", "fc", "--image-size", "128",
                                "--out", tmp_path / "r", *FAST[:-1], "512")[::2])
    assert "1×128×128" in line and "batch 512" in line and "try --batch-size" in line
    assert not (tmp_path / "r").exists()  # nothing left to block the name
    suggested = int(line.rsplit("--batch-size ", 1)[1])
    assert 16 <= suggested <= 33 and one < many
    code, _, err = cli("train", "--dataset", f"folder:{bars}", "--model", "fc", "--image-size", "128",
                       "--out", tmp_path / "r", *FAST[:-1], str(suggested))
    assert code == 0, err  # the suggested batch does fit


def test_an_image_size_too_big_for_memory_is_one_line(cli, bars: Path, tmp_path: Path) -> None:
    line = _one_error_line(*cli("train", "--dataset", f"folder:{bars}", "--image-size", "60000", "--out",
                                tmp_path / "r", *FAST)[::2])
    assert "60000x60000" in line and "GiB" in line
    assert not (tmp_path / "r").exists()


# -- no silent no-ops -------------------------------------------------------------------------------------


def test_flags_without_effect_are_refused(cli, bars: Path, tmp_path: Path) -> None:
    line = _one_error_line(*cli("train", "--dataset", f"folder:{bars}", "--noise", "gaussian:0.3",
                                "--out", tmp_path / "a", *FAST)[::2])
    assert "--noise" in line and "--task denoise" in line
    line = _one_error_line(*cli("classify", "train", "--dataset", f"folder:{bars}", "--optimizer", "adam",
                                "--momentum", "0.9", "--out", tmp_path / "b", *FAST)[::2])
    assert "--momentum" in line and "--optimizer sgd" in line
    line = _one_error_line(*cli("train", "--dataset", f"folder:{bars}", "--color-output", "rgb",
                                "--out", tmp_path / "c", *FAST)[::2])
    assert "--color-output" in line and "colorize" in line


# -- classes ----------------------------------------------------------------------------------------------


def test_normal_classes_by_name_and_the_mapping_is_printed(cli, runs: dict[str, Path], bars: Path,
                                                           tmp_path: Path) -> None:
    config = json.loads((runs["ae"] / "config.json").read_text())
    assert config["training"]["normal_classes"] == [0]  # given as "horizontal", stored as its index
    line = _one_error_line(*cli("train", "--dataset", f"folder:{bars}", "--normal-classes", "diagonal",
                                "--out", tmp_path / "x", *FAST)[::2])
    assert "'diagonal' is not a class" in line and "0 horizontal, 1 vertical" in line
    run = tmp_path / "ae"
    shutil.copytree(runs["ae"], run)
    code, _, err = cli("detect", run, "--eval")
    assert code == 0, err
    assert "classes: 0 horizontal, 1 vertical; normal: 0 horizontal" in err
    stored = (run / "detect-eval.json").read_text()
    code, _, err = cli("detect", run, "--eval", "--normal-classes", "vertical")
    assert code == 0 and "warning: evaluating with normal classes vertical, not the run's own" in err, err
    assert (run / "detect-eval.json").read_text() == stored  # the run's own evaluation is kept
    assert json.loads((run / "detect-eval-normal-1.json").read_text())["normal_classes"] == ["vertical"]


# -- file verbs -------------------------------------------------------------------------------------------


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(5)
    Image.fromarray(bar_image(rng, False, 16)).save(folder / "a.png")
    Image.fromarray(bar_image(rng, True, 24)).save(folder / "sub" / "b.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


@pytest.mark.parametrize("verb", ["reconstruct", "denoise", "detect", "encode", "classify predict"])
def test_file_verbs_take_folders_and_name_each_bad_file(cli, runs: dict[str, Path], mixed_folder: Path,
                                                        tmp_path: Path, verb: str) -> None:
    run = {"denoise": runs["denoise"], "classify predict": runs["classifier"]}.get(verb, runs["ae"])
    if verb == "detect":
        run = tmp_path / "ae"
        shutil.copytree(runs["ae"], run)
    extra = {"reconstruct": ["--out", tmp_path / "o"], "denoise": ["--out", tmp_path / "o"],
             "encode": ["--out", tmp_path / "codes.cvc"]}.get(verb, [])
    code, out, err = cli(*verb.split(), run, mixed_folder, *extra)
    assert code == 2, err
    assert "broken.png" in err and err.strip().splitlines()[-1].startswith("error: 1 of 3 ")
    assert "Traceback" not in err
    if verb in ("reconstruct", "denoise"):
        assert sorted(p.relative_to(tmp_path / "o").as_posix() for p in (tmp_path / "o").rglob("*.png")) == \
            ["a.png", "sub/b.png"]
        with Image.open(tmp_path / "o" / "sub" / "b.png") as picture:
            assert picture.size == (24, 24)  # each image at its own size
    if verb == "encode":
        from convae.applications.codes import read_codes

        assert len(read_codes(tmp_path / "codes.cvc")) == 2
    if verb in ("detect", "classify predict"):
        assert "a.png" in out and "b.png" in out


# -- run kinds --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("verb", "kind", "needs"), [
    ("evaluate", "classifier", "autoencoder"), ("show", "classifier", "autoencoder"),
    ("detect", "classifier", "autoencoder"), ("embed", "classifier", "autoencoder"),
    ("reconstruct", "classifier", "autoencoder"), ("classify evaluate", "ae", "classifier"),
    ("classify predict", "ae", "classifier"), ("classify probe", "classifier", "autoencoder"),
])
def test_verbs_tell_run_kinds_apart(cli, runs: dict[str, Path], tmp_path: Path, verb: str, kind: str,
                                    needs: str) -> None:
    extra = {"detect": ["--eval"], "embed": ["--out", tmp_path / "e.npz"],
             "reconstruct": [tmp_path, "--out", tmp_path / "o"], "classify predict": [tmp_path]}.get(verb, [])
    line = _one_error_line(*cli(*verb.split(), runs[kind], *extra)[::2])
    found = "classifier" if kind == "classifier" else "autoencoder"
    assert f"{found} run, not a{'n' if needs == 'autoencoder' else ''} {needs} run" in line, line


# -- output -----------------------------------------------------------------------------------------------


def test_models_lists_every_preset_with_training_defaults_as_markdown(cli) -> None:
    from convae.models import PRESETS
    from convae.models.classifier import CLASSIFIERS

    code, out, _ = cli("models")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    names = {row.split("|")[1].strip() for row in rows[1:]}
    assert names == set(PRESETS) | set(CLASSIFIERS)
    assert all(row.count("|") == rows[0].count("|") for row in rows)  # one line per row: never wrapped
    assert "training defaults" in rows[0] and "batch size 124, epochs 10" in out


def test_piped_output_is_never_wrapped(cli, runs: dict[str, Path], tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "run"
    shutil.copytree(runs["ae"], deep)
    code, out, _ = cli("evaluate", deep)
    assert code == 0
    assert str(deep) in out.splitlines()[0]  # the whole path on one line
    assert all(line.count("|") in (0, 3) for line in out.splitlines())  # markdown rows, two columns


# -- sizes ------------------------------------------------------------------------------------------------


def test_tiny_images_are_skipped_and_aspect_changes_announced_once(cli, tmp_path: Path) -> None:
    root = _bars(tmp_path / "data", 8, 4)
    Image.new("L", (1, 1)).save(root / "train" / "horizontal" / "dot.png")
    Image.fromarray(np.zeros((16, 40), np.uint8)).save(root / "train" / "vertical" / "wide.png")
    Image.fromarray(np.zeros((16, 48), np.uint8)).save(root / "train" / "vertical" / "wider.png")
    code, _, err = cli("train", "--dataset", f"folder:{root}", "--model", "conv-pool", "--image-size", "16",
                       "--out", tmp_path / "r", *FAST)
    assert code == 0, err
    assert "dot.png: skipped, not a usable image (image is too small to use (1×1 pixels, H×W" in err
    aspect = [line for line in err.splitlines() if "aspect ratio" in line]
    assert len(aspect) == 1 and "16×40 images (and 1 other size(s)) to 16×16 (H×W)" in aspect[0], err


# -- progress ---------------------------------------------------------------------------------------------


def test_progress_in_a_log_has_a_line_at_least_every_interval_and_no_nan(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from convae.training.progress import RunProgress

    lines: list[str] = []
    console = Console(file=io.StringIO(), force_terminal=False)
    with RunProgress(console, epochs=3, steps_per_epoch=4, done=0, enabled=True, say=lines.append,
                     every=0.0) as progress:
        for done in range(1, 13):
            progress.update(done, loss=0.5 / done, rate=100.0)
    assert len(lines) == 12 and lines[0].startswith("epoch 1/3  step 1/4  loss 0.50000")
    assert lines[4].startswith("epoch 2/3  step 1/4") and "run ETA" in lines[4]
    assert not any("nan" in line for line in lines)


def test_progress_bar_spans_the_whole_run_and_shows_no_loss_before_the_first_step() -> None:
    import io

    from rich.console import Console

    from convae.training.progress import RunProgress

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=140)
    progress = RunProgress(console, epochs=2, steps_per_epoch=5, done=3, enabled=True, say=print)
    task = progress.bar.tasks[0]
    assert task.total == 10 and task.completed == 3 and task.fields["loss"] == ""
    progress.update(6, loss=0.25, rate=10.0)
    assert progress.bar.tasks[0].description == "epoch 2/2" and progress.bar.tasks[0].fields["loss"] == "loss 0.25000"


def test_classifier_training_shows_the_same_progress(cli, bars: Path, tmp_path: Path, monkeypatch) -> None:
    import convae.training.progress as progress

    seen = []
    monkeypatch.setattr(progress.RunProgress, "update", lambda self, done, loss, rate: seen.append(done))
    code, _, err = cli("classify", "train", "--dataset", f"folder:{bars}", "--out", tmp_path / "c", "--progress",
                       *FAST[:1], "1", *FAST[3:])
    assert code == 0, err
    assert seen and seen[-1] == 3  # 38 training images, batch 16: 3 steps


# -- configs ----------------------------------------------------------------------------------------------


def test_a_runs_config_json_repeats_it_and_print_config_round_trips(cli, runs: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    code, out, err = cli("train", "--config", runs["ae"] / "config.json", "--print-config")
    assert code == 0, err
    assert 'model = "conv-pool"' in out and "normal_classes = [0]" in out and "[model_args]" in out
    (tmp_path / "again.toml").write_text(out)
    code, again, _ = cli("train", "--config", tmp_path / "again.toml", "--print-config")
    assert code == 0 and again == out
    code, _, err = cli("train", "--config", runs["ae"] / "config.json", "--out", tmp_path / "r2")
    assert code == 0, err
    from convae.run import Run

    assert Run.open(tmp_path / "r2").digest == Run.open(runs["ae"]).digest  # the same weights: the run repeated


def test_resume_takes_new_runtime_settings(cli, bars: Path, tmp_path: Path) -> None:
    """--logger, --checkpoint-every, --data-dir change how a run goes on, not what it computes: taken, not refused."""
    from convae.run.config import TrainConfig

    command = ["train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--out", tmp_path / "r",
               "--threads", "1", "--no-progress", "--batch-size", "16"]
    assert cli(*command, "--epochs", "1", "--logger", "none")[0] == 0
    assert not (tmp_path / "r" / "metrics.csv").exists()
    code, _, err = cli(*command, "--epochs", "2", "--resume", "--logger", "csv", "--checkpoint-every", "1")
    assert code == 0, err
    rows = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2"]  # the new logger took effect
    stored = TrainConfig(dataset="mnist-sample", model="unpool", data_dir=str(tmp_path)).resolved()
    assert stored.conflicts({"data_dir": str(tmp_path / "moved"), "logger": "none"}) == []
    assert stored.conflicts({"lr": 0.5})[0][0] == "lr"
