"""Nothing lost, nothing silent: what a careless or hostile user tries ends in one line, exit 2, no file changed.

Each case runs through the CLI and checks three things: one ``error:`` line, exit code 2, and
every file that was there before is byte-identical afterwards (md5 before and after). Then
the files convae reads back (code files, thresholds, metrics) damaged on purpose, EXIF
orientation, animated images and names with control characters.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_bars
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from convae.applications.codes.format import read_codes
from convae.applications.codes.quantize import dequantize
from convae.core.errors import ConvaeError

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ("--threads", "1", "--no-progress", "--epochs", "1", "--batch-size", "16", "--device", "cpu")


def _train(root: Path, bars: Path, name: str, *extra: str) -> Path:
    from test_cli_contract import _run_cli

    run = root / name
    code, _, err = _run_cli(["train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--out", run, *FAST,
                             *extra])
    assert code == 0, err
    return run


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bars(tmp_path_factory.mktemp("lost-bars"), {"train": 16, "test": 6}, seed=5)


@pytest.fixture(scope="module")
def made(bars: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A reconstruction run with a threshold, a second run, and a code file of each form."""
    from test_cli_contract import _run_cli

    root = tmp_path_factory.mktemp("lost-runs")
    run = _train(root, bars, "run", "--normal-classes", "horizontal", "--val-fraction", "0.25")
    other = _train(root, bars, "other")
    code, _, err = _run_cli(["detect", run, "--fit", "--device", "cpu"])
    assert code == 0, err
    files = {"run": run, "other": other, "root": root}
    for suffix in ("cvc", "npz"):
        files[suffix] = root / f"codes.{suffix}"
        code, _, err = _run_cli(["encode", run, bars / "test" / "vertical", "--out", files[suffix], "--device", "cpu"])
        assert code == 0, err
    return files


def _md5s(*roots: Path) -> dict[str, str]:
    found = {}
    for root in roots:
        for path in ([root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())):
            found[str(path)] = hashlib.md5(path.read_bytes()).hexdigest()
    return found


def _refused(cli, *args: object, watch: tuple[Path, ...]) -> str:
    """Run the CLI; assert one error line, exit 2 and no watched file changed; return the line."""
    before = _md5s(*watch)
    code, _, err = cli(*map(str, args))
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert code == 2, (code, err)
    assert len([line for line in lines if line.startswith("error:")]) >= 1 and "Traceback" not in err, err
    assert lines[-1].startswith("error: "), err
    assert _md5s(*watch) == before, "a file changed"
    return lines[-1]


# -- output options never destroy what they did not make ---------------------------------------------


def test_encode_out_at_another_runs_weights_is_refused(cli, made, bars) -> None:
    line = _refused(cli, "encode", made["run"], bars / "test" / "vertical", "--out", made["other"] / "model.safetensors",
                    watch=(made["other"],))
    assert "model.safetensors" in line and "run directory" in line


def test_detect_csv_at_another_runs_config_is_refused(cli, made, bars) -> None:
    line = _refused(cli, "detect", made["run"], bars / "test", "--threshold", "0.5", "--csv",
                    made["other"] / "config.json", watch=(made["other"],))
    assert "config.json" in line and "--csv" in line
    assert cli("evaluate", made["other"], "--json")[0] == 0  # the run still opens


@pytest.mark.parametrize("option", ["--csv", "--heatmaps"])
def test_detect_outputs_never_overwrite_a_foreign_file(cli, made, bars, tmp_path: Path, option: str) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("my own notes\n")
    target = mine if option == "--csv" else tmp_path
    if option == "--heatmaps":  # a folder whose picture names collide with a photo of the user's
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "0.png")
    _refused(cli, "detect", made["run"], bars / "test" / "vertical" / "0.png", "--threshold", "0.5", option, target,
             watch=(tmp_path,))


def test_the_same_output_again_is_allowed(cli, made, bars, tmp_path: Path) -> None:
    for _ in range(2):
        code, _, err = cli("detect", made["run"], bars / "test" / "vertical", "--threshold", "0.5",
                           "--csv", tmp_path / "scores.csv", "--heatmaps", tmp_path / "heat")
        assert code == 0, err
        code, _, err = cli("encode", made["run"], bars / "test" / "vertical", "--out", tmp_path / "c.cvc")
        assert code == 0, err
        code, _, err = cli("reconstruct", made["run"], bars / "test" / "vertical",
                           "--out", tmp_path / "recon")
        assert code == 0, err


@pytest.mark.parametrize("verb", ["encode", "export", "compare", "embed"])
def test_file_outputs_refuse_a_foreign_file(cli, made, bars, tmp_path: Path, verb: str) -> None:
    mine = tmp_path / {"encode": "x.cvc", "export": "x.onnx", "compare": "x.html", "embed": "x.csv"}[verb]
    mine.write_bytes(b"the user's own bytes")
    args = {"encode": ("encode", made["run"], bars / "test" / "vertical", "--out", mine),
            "export": ("export", made["run"], "--out", mine),
            "compare": ("compare", made["run"], made["other"], "--out", mine),
            "embed": ("embed", made["run"], "--out", mine)}[verb]
    line = _refused(cli, *args, watch=(tmp_path,))
    assert str(mine) in line and "not a previous convae" in line


def test_restore_never_overwrites_a_picture_convae_did_not_write(cli, made, bars, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(out / "0.png")  # the user's own 0.png
    before = _md5s(out)
    code, _, err = cli("reconstruct", made["run"], bars / "test" / "vertical" / "0.png", "--out", out)
    assert code == 2 and "not a picture convae wrote" in err and "nothing was written" in err, err
    assert _md5s(out) == before


def test_a_folder_output_that_cannot_be_written_is_one_line_about_it(cli, made, bars, tmp_path: Path,
                                                                    monkeypatch) -> None:
    import tempfile

    real = tempfile.TemporaryFile

    def read_only(*args, **kwargs):
        if str(kwargs.get("dir", "")).startswith(str(tmp_path)):
            raise OSError(30, "Read-only file system")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    line = _refused(cli, "reconstruct", made["run"], bars / "test" / "vertical", "--out", tmp_path / "out",
                    watch=(bars,))
    assert "--out" in line and "Read-only" in line and "input" not in line
    assert not (tmp_path / "out").exists()


def test_a_missing_input_says_nothing_was_written(cli, made, tmp_path: Path) -> None:
    line = _refused(cli, "reconstruct", made["run"], tmp_path / "absent.png", "--out", tmp_path / "out", watch=())
    assert "nothing was written" in line and "the other" not in line
    assert not (tmp_path / "out").exists()


def test_train_out_at_a_file_or_under_proc_is_one_line(cli, bars, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert "not a folder" in _refused(cli, "train", "--dataset", f"folder:{bars}", "--out", afile, *FAST,
                                      watch=(afile,))
    assert "/proc/convae-run" in _refused(cli, "train", "--dataset", f"folder:{bars}", "--out", "/proc/convae-run",
                                          *FAST, watch=())


# -- integrity of what convae reads back ------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["cvc", "npz"])
def test_a_flipped_byte_in_a_code_file_is_refused_before_anything_is_written(cli, made, tmp_path: Path,
                                                                            suffix: str) -> None:
    data = bytearray(made[suffix].read_bytes())
    data[len(data) // 2] ^= 0x5A
    damaged = tmp_path / f"damaged.{suffix}"
    damaged.write_bytes(bytes(data))
    _refused(cli, "decode", made["run"], damaged, "--out", tmp_path / "out", watch=(damaged,))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", ["cvc", "npz"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.integers(0, 10**9), flip=st.integers(1, 255))  # integers: training flushes denormals
def test_any_flipped_byte_is_refused_or_harmless(made, suffix: str, where: int, flip: int) -> None:
    """Property: a code file with any one byte changed is refused, or decodes to exactly the clean values."""
    clean = made[suffix].read_bytes()
    data = bytearray(clean)
    data[where % len(data)] ^= flip
    damaged = made["root"] / f"flip.{suffix}"
    damaged.write_bytes(bytes(data))
    want = dequantize(read_codes(made[suffix]))
    try:
        got = dequantize(read_codes(damaged))
    except ConvaeError:
        return
    assert got.shape == want.shape and bool((got == want).all())


def test_a_code_file_that_claims_to_be_encrypted_is_refused(made, tmp_path: Path) -> None:
    """What hypothesis found: one flipped bit in a zip header's flags reads as "encrypted"."""
    data = bytearray(made["npz"].read_bytes())
    central = data.index(b"PK\x01\x02")  # the first central-directory entry
    data[central + 8] |= 1  # its general-purpose flags: bit 0, encrypted
    damaged = tmp_path / "encrypted.npz"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ConvaeError, match="encrypted.npz: not a readable .npz code file"):
        read_codes(damaged)


def test_a_nan_threshold_is_refused_naming_the_file_and_field(cli, made, bars, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(made["run"], run)
    stored = json.loads((run / "threshold.json").read_text())
    (run / "threshold.json").write_text(json.dumps({**stored, "value": float("nan")}))
    line = _refused(cli, "detect", run, bars / "test", watch=(run,))
    assert "threshold.json: value" in line


@pytest.mark.parametrize("bad", [b"\xff\xfe not utf-8\n", b"[1, 2]\n"])
def test_a_damaged_metrics_line_is_named_and_resume_rewrites_the_log(cli, made, bars, tmp_path: Path,
                                                                     bad: bytes) -> None:
    run = tmp_path / "run"
    shutil.copytree(made["run"], run)
    log = run / "metrics.jsonl"
    good = log.read_bytes()
    log.write_bytes(good + bad)
    for verb in (("show", run), ("compare", run, made["other"])):
        line = _refused(cli, *verb, watch=(log,))
        assert "metrics.jsonl:2" in line
    code, _, err = cli("train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--normal-classes",
                       "horizontal", "--val-fraction", "0.25", "--out", run, *FAST, "--resume")
    assert code == 0 and "rewriting metrics.jsonl" in err, err
    assert log.read_bytes() == good


# -- typed settings, honest images, true messages ----------------------------------------------------------


@pytest.mark.parametrize(("toml", "words"), [
    ("epochs = 1.5", "epochs must be a whole number"),
    ("lr = true", "lr must be a number"),
    ('epochs = "three"', "epochs must be a whole number"),
    ("threads = 0", "threads must be at least 1"),
])
def test_settings_files_are_typed_and_name_the_file(cli, bars, tmp_path: Path, toml: str, words: str) -> None:
    config = tmp_path / "exp.toml"
    config.write_text(toml + "\n")
    line = _refused(cli, "train", "--dataset", f"folder:{bars}", "--config", config, "--out", tmp_path / "r",
                    "--no-progress", watch=(config,))
    assert f"exp.toml: {words}" in line
    assert not (tmp_path / "r").exists()


def test_threads_zero_and_a_bad_stored_value_are_named_where_they_are(cli, made, bars, tmp_path: Path) -> None:
    assert "--threads must be at least 1" in _refused(cli, "train", "--dataset", f"folder:{bars}", "--threads", "0",
                                                     "--out", tmp_path / "r", watch=())
    run = tmp_path / "run"
    shutil.copytree(made["run"], run)
    config = json.loads((run / "config.json").read_text())
    config["training"]["batch_size"] = 2.5
    (run / "config.json").write_text(json.dumps(config))
    line = _refused(cli, "train", "--out", run, "--resume", "--no-progress", watch=(run,))
    assert "config.json: training.batch_size" in line and "--batch-size" not in line


def test_a_schedule_changing_epochs_on_resume_is_refused(cli, bars, tmp_path: Path) -> None:
    args = ["train", "--dataset", f"folder:{bars}", "--model", "conv-pool", "--lr-schedule", "cosine",
            "--out", tmp_path / "r", *FAST]
    assert cli(*map(str, args))[0] == 0
    longer = [a if a != "1" else "2" for a in map(str, args)]
    line = _refused(cli, *longer, "--resume", watch=(tmp_path / "r",))
    assert "--epochs 2 (this run: 1)" in line and "cosine" in line


def test_a_wrong_kind_of_run_is_named_by_its_path(cli, made, bars) -> None:
    line = _refused(cli, "denoise", made["run"], bars / "test", "--out", made["root"] / "d", watch=())
    assert f"{made['run']}: a reconstruct run, not a denoise run" in line and "object at 0x" not in line


def test_exif_orientation_is_applied_as_a_viewer_shows_it(cli, made, tmp_path: Path) -> None:
    stored = np.zeros((20, 40), np.uint8)  # stored 20 high, 40 wide; orientation 6: shown 40 high, 20 wide
    stored[:, :10] = 255
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    code, out, err = cli("reconstruct", made["run"], tmp_path / "phone.jpg", "--out", tmp_path / "out")
    assert code == 0, err
    assert Image.open(tmp_path / "out" / "phone.png").size == (20, 40)  # PIL: (width, height)
    code, out, err = cli("detect", made["run"], tmp_path / "phone.jpg", "--threshold", "0.5")
    assert code == 0 and "resized 40×20" in out, out


def test_an_animated_image_says_it_used_its_first_frame(cli, made, tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((16, 16), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    code, out, err = cli("reconstruct", made["run"], tmp_path / "anim.gif", "--out", tmp_path / "out")
    assert code == 0 and "first of its 2 frames" in out, (out, err)


def test_a_name_with_a_newline_stays_on_one_line(cli, made, bars, tmp_path: Path) -> None:
    odd = tmp_path / "two\nlines.png"
    shutil.copy(bars / "test" / "vertical" / "0.png", odd)
    code, out, err = cli("detect", made["run"], odd, "--threshold", "0.5")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.strip()]
    assert len(rows) == 1 and "two\\nlines.png" in rows[0]


def test_every_dataset_kind_is_in_the_help(cli) -> None:
    for verb in (("train",), ("classify", "train")):
        code, out, _ = cli(*verb, "-h")
        assert code == 0 and "mvtec:PATH" in out and "folder:PATH" in out


def test_a_patch_run_counts_patches_and_images_apart(cli, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 1)):
        (photos / split / "p").mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(photos / split / "p" / f"{i}.png")
    code, _, err = cli("train", "--dataset", f"folder:{photos}", "--patch", "16", "--out", tmp_path / "r", *FAST)
    assert code == 0, err
    code, out, err = cli("evaluate", tmp_path / "r")
    assert code == 0, err
    assert "patches of 1 image" in out and "1 images" not in out


def test_hostile_files_leave_the_environment_as_it_was(made) -> None:
    """The tests above worked on copies: the module's own runs are intact."""
    assert (made["run"] / "threshold.json").exists() and os.path.getsize(made["run"] / "model.safetensors") > 0


def test_a_file_size_limit_is_not_called_a_full_disk(tmp_path: Path) -> None:
    import errno

    from convae.core.atomic import atomic_write

    def too_big(tmp: Path) -> None:
        raise OSError(errno.EFBIG, "File too large")

    (tmp_path / "kept.json").write_text("old")
    with pytest.raises(ConvaeError, match="file-size limit") as caught:
        atomic_write(tmp_path / "kept.json", too_big)
    assert "disk full" not in str(caught.value)
    assert (tmp_path / "kept.json").read_text() == "old" and len(list(tmp_path.iterdir())) == 1
