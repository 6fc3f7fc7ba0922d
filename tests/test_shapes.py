"""Shape arithmetic, the ConvTranspose2d solver and the layer table, checked against real layers.

Every size the library computes is compared with what PyTorch actually produces: the
formulas against real Conv/Pool/ConvTranspose/Unpool/Upsample layers, each solver answer
by building the nn.ConvTranspose2d it describes, and the shape table against a manual
step-by-step forward pass of every preset.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

from convae.applications.run_shapes import table_for_run
from convae.cli import app
from convae.core.errors import ConvaeError, ModelError
from convae.models import PRESETS, AutoEncoder, build_model, code_values
from convae.models.classifier import CLASSIFIERS, Classifier, build_classifier
from convae.shapes import (
    DeconvSetting,
    DeconvSetting2d,
    conv2d_out,
    conv_transpose2d_out,
    layer_out,
    max_unpool2d_out,
    parse_hw,
    parse_size,
    pool2d_out,
    solve_conv_transpose,
    solve_conv_transpose_2d,
    upsample_out,
)
from convae.tables import parse_input_shape, solve_report, table_for_preset, trace

CONVAE = Path(sys.executable).with_name("convae")
runner = CliRunner()


@pytest.fixture
def plain_kernels():
    """PyTorch's native convolutions instead of oneDNN, whose per-shape setup makes a size grid slow.

    The output sizes are PyTorch's either way; only the time to build thousands of
    differently shaped layers changes (seconds instead of minutes).
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def real_hw(layer: nn.Module, h: int, w: int, channels: int = 1) -> tuple[int, int]:
    """The (H, W) the layer really produces; an empty output counts as a failure, as in convae."""
    with torch.no_grad():
        out = layer(torch.zeros(1, channels, h, w))
    out = out[0] if isinstance(out, tuple) else out
    if min(out.shape[-2:]) < 1:
        raise RuntimeError(f"empty output {tuple(out.shape)}")
    return tuple(out.shape[-2:])


# -- the formulas against real layers ---------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 5, 7, 14, 28, 31])
def test_conv2d_out_matches_conv2d(size: int, plain_kernels: None) -> None:
    checked = 0
    for k, s, p, d in itertools.product((1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2)):
        layer = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)
        try:
            expected = real_hw(layer, size, size)[0]
        except RuntimeError:
            with pytest.raises(ConvaeError):
                conv2d_out(size, k, s, p, d)
            continue
        assert conv2d_out(size, k, s, p, d) == expected, (size, k, s, p, d)
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("size", [1, 2, 3, 7, 14, 15, 28])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pool2d_out_matches_max_and_avg_pool(size: int, ceil_mode: bool) -> None:
    for k, s, p in itertools.product((1, 2, 3, 4), (None, 1, 2, 3), (0, 1, 2)):
        for layer in (
            nn.MaxPool2d(k, stride=s, padding=p, ceil_mode=ceil_mode),
            nn.AvgPool2d(k, stride=s, padding=p, ceil_mode=ceil_mode),
        ):
            try:
                expected = real_hw(layer, size, size)[0]
            except RuntimeError:
                with pytest.raises(ConvaeError):
                    pool2d_out(size, k, s, p, ceil_mode=ceil_mode)
                continue
            assert pool2d_out(size, k, s, p, ceil_mode=ceil_mode) == expected, (type(layer), size, k, s, p)


def test_pool2d_out_dilated_max_pool() -> None:
    for size, k, d in itertools.product((5, 9, 16), (2, 3), (1, 2, 3)):
        layer = nn.MaxPool2d(k, stride=1, dilation=d)
        try:
            expected = real_hw(layer, size, size)[0]
        except RuntimeError:
            continue
        assert pool2d_out(size, k, 1, 0, d) == expected


@pytest.mark.parametrize("size", [1, 2, 4, 7, 14])
def test_conv_transpose2d_out_matches_layer(size: int, plain_kernels: None) -> None:
    for k, s, p, d in itertools.product((1, 2, 3, 4, 5), (1, 2, 3), (0, 1, 2), (1, 2)):
        for op in range(max(s, d)):
            layer = nn.ConvTranspose2d(1, 1, k, stride=s, padding=p, output_padding=op, dilation=d)
            try:
                expected = real_hw(layer, size, size)[0]
            except RuntimeError:
                with pytest.raises(ConvaeError):
                    conv_transpose2d_out(size, k, s, p, op, d)
                continue
            assert conv_transpose2d_out(size, k, s, p, op, d) == expected, (size, k, s, p, op, d)


def test_conv_transpose2d_out_rejects_output_padding_pytorch_rejects() -> None:
    with pytest.raises(ConvaeError, match="output_padding 2"):
        conv_transpose2d_out(7, 3, stride=2, output_padding=2)


@pytest.mark.parametrize("size", [2, 3, 7, 14, 15])
def test_max_unpool2d_out_matches_layer(size: int) -> None:
    checked = 0
    for k, s, p in itertools.product((2, 3, 4), (None, 1, 2), (0, 1)):
        if p * 2 > k or size + 2 * p < k:
            continue
        pooled = nn.MaxPool2d(k, stride=s, padding=p)(torch.rand(1, 1, size, size))
        # index 0 is valid for any output size, so the layer's own size rule decides the shape
        unpooled = nn.MaxUnpool2d(k, stride=s, padding=p)(pooled, torch.zeros_like(pooled, dtype=torch.long))
        assert max_unpool2d_out(pooled.shape[-1], k, s, p) == unpooled.shape[-1], (size, k, s, p)
        checked += 1
    assert checked


@pytest.mark.parametrize("scale", [0.5, 1.5, 2, 3, 2.5])
def test_upsample_out_matches_layer(scale: float) -> None:
    for size in (1, 3, 7, 10):
        expected = nn.Upsample(scale_factor=scale)(torch.zeros(1, 1, size, size)).shape[-1] if size * scale >= 1 else None
        if expected is None:
            with pytest.raises(ConvaeError):
                upsample_out(size, scale)
        else:
            assert upsample_out(size, scale) == expected


def test_per_dimension_sizes_for_non_square_inputs() -> None:
    layer = nn.Conv2d(1, 1, (3, 5), stride=(2, 1), padding=(1, 0))
    assert conv2d_out((28, 20), (3, 5), (2, 1), (1, 0)) == real_hw(layer, 28, 20)
    assert conv2d_out((28, 20), 3, 2, 1) == (14, 10)
    assert pool2d_out((7, 9), 2) == real_hw(nn.MaxPool2d(2), 7, 9) == (3, 4)
    assert conv_transpose2d_out((7, 10), (2, 3), (2, 3)) == (14, 30)
    assert max_unpool2d_out((7, 4), 4) == (28, 16)
    assert upsample_out((3, 5), 2) == (6, 10)
    # int in, int out: the presets depend on that
    assert isinstance(conv2d_out(28, 3, 2, 1), int)
    with pytest.raises(ConvaeError):
        conv2d_out((1, 2, 3), 3)


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(1, 2, 3, padding=1),
        nn.Conv2d(1, 2, (3, 5), stride=(2, 3), padding=(1, 2), dilation=(1, 2)),
        nn.Conv2d(1, 2, 3, padding="same"),
        nn.Conv2d(1, 2, 3, padding="valid"),
        nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1),
        nn.ConvTranspose2d(1, 1, (2, 4), stride=(2, 2), padding=(0, 1)),
        nn.MaxPool2d(2),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.AvgPool2d((2, 3)),
        nn.Upsample(scale_factor=2),
        nn.Upsample(size=(9, 11)),
        nn.ReLU(),
    ],
    ids=lambda m: repr(m)[:60],
)
def test_layer_out_reads_the_layer_settings(layer: nn.Module) -> None:
    for h, w in ((28, 28), (15, 22), (8, 9)):
        assert layer_out(layer, (h, w)) == real_hw(layer, h, w)


def test_parse_sizes() -> None:
    assert parse_size("28") == (28,)
    assert parse_size("1x28x28") == (1, 28, 28)
    assert parse_size("14×20") == (14, 20)
    assert parse_hw("28") == (28, 28)
    assert parse_hw("14x20") == (14, 20)
    for bad in ("", "x", "28x", "a", "0x3", "-1"):
        with pytest.raises(ConvaeError):
            parse_size(bad)
    with pytest.raises(ConvaeError, match="H or HxW"):
        parse_hw("1x2x3")
    assert parse_input_shape(None) == (1, 28, 28)
    assert parse_input_shape("32") == (1, 32, 32)
    assert parse_input_shape("20x30", (3, 1, 1)) == (3, 20, 30)
    assert parse_input_shape("3x32x32") == (3, 32, 32)
    with pytest.raises(ConvaeError):
        parse_input_shape("1x2x3x4")


# -- the ConvTranspose2d solver ------------------------------------------------------------------


def assert_maps(setting: DeconvSetting, size_in: int, size_out: int) -> None:
    layer = setting.build(2, 3)
    assert real_hw(layer, size_in, size_in, channels=2) == (size_out, size_out), setting


REFERENCE_PAIRS = [(14, 28), (8, 16), (16, 32), (7, 28), (7, 14), (4, 8), (2, 4)]


@pytest.mark.parametrize("size_in,size_out", REFERENCE_PAIRS)
def test_reference_pairs_have_the_clean_inverse_first(size_in: int, size_out: int) -> None:
    settings_ = solve_conv_transpose(size_in, size_out)
    stride = size_out // size_in
    assert settings_[0] == DeconvSetting(kernel=stride, stride=stride, padding=0)
    assert settings_[0].clean_inverse and not settings_[0].checkerboard_prone
    for setting in settings_:
        assert_maps(setting, size_in, size_out)


def test_every_answer_builds_a_layer_of_the_exact_size_over_a_grid(plain_kernels: None) -> None:
    solved = unsolved = 0
    for size_in in range(1, 17):
        for size_out in range(1, 40):
            try:
                answers = solve_conv_transpose(size_in, size_out, max_kernel=6)
            except ConvaeError as error:
                unsolved += 1
                assert "\n" not in str(error) and str(size_in) in str(error)
                continue
            solved += 1
            assert len(set(answers)) == len(answers)
            for setting in answers:
                assert setting.kernel >= setting.stride  # no holes
                assert setting.output_size(size_in) == size_out
                # PyTorch's own transposed convolution (functional: no layer init, so the grid stays fast)
                out = F.conv_transpose2d(
                    torch.zeros(1, 1, size_in, size_in), torch.zeros(1, 1, setting.kernel, setting.kernel),
                    stride=setting.stride, padding=setting.padding, output_padding=setting.output_padding,
                    dilation=setting.dilation,
                )
                assert out.shape[-2:] == (size_out, size_out), setting
            assert_maps(answers[0], size_in, size_out)  # and the real layer for the top choice
    assert solved > 200 and unsolved > 20


def test_ranking_clean_then_even_then_output_padding_last() -> None:
    answers = solve_conv_transpose(14, 28)
    assert [(s.kernel, s.stride, s.padding, s.output_padding) for s in answers[:3]] == [
        (2, 2, 0, 0),
        (4, 2, 1, 0),
        (6, 2, 2, 0),
    ]
    needs_op = [s.output_padding > 0 for s in answers]
    assert needs_op == sorted(needs_op), "output_padding settings must come last"
    assert all(s.checkerboard_prone for s in answers if s.output_padding)
    assert "checkerboard-prone" in answers[-1].note


@settings(max_examples=300, deadline=None)
@given(
    size_in=st.integers(1, 30),
    kernel=st.integers(1, 7),
    stride=st.integers(1, 7),
    data=st.data(),
)
def test_solver_is_complete(size_in: int, kernel: int, stride: int, data: st.DataObject) -> None:
    """Any layer we would accept (kernel ≥ stride, padding ≤ kernel-1) is among the answers for its own sizes."""
    if kernel < stride:
        return
    padding = data.draw(st.integers(0, kernel - 1))
    output_padding = data.draw(st.integers(0, stride - 1))
    try:
        size_out = conv_transpose2d_out(size_in, kernel, stride, padding, output_padding)
    except ConvaeError:
        return
    answers = solve_conv_transpose(size_in, size_out, max_kernel=7)
    assert DeconvSetting(kernel, stride, padding, output_padding) in answers
    assert solve_conv_transpose(size_in, size_out, kernel=kernel, stride=stride)  # filters keep it too


def test_fixed_kernel_and_stride_filters() -> None:
    assert all(s.stride == 2 for s in solve_conv_transpose(7, 14, stride=2))
    assert all(s.kernel == 4 for s in solve_conv_transpose(7, 14, kernel=4))
    assert solve_conv_transpose(7, 14, kernel=4, stride=2) == [DeconvSetting(4, 2, 1, 0)]


def test_preset_contract_for_derived_decoders(plain_kernels: None) -> None:
    """blocks.derived_conv_transpose takes [0] of (stride=s, max_kernel=2s+1): odd sizes avoid output_padding."""
    assert solve_conv_transpose(14, 28, stride=2, max_kernel=5)[0] == DeconvSetting(2, 2, 0, 0)
    assert solve_conv_transpose(4, 7, stride=2, max_kernel=5)[0] == DeconvSetting(3, 2, 1, 0)
    assert solve_conv_transpose(3, 7, stride=2, max_kernel=5)[0] == DeconvSetting(3, 2, 0, 0)
    for size_in, size_out in itertools.product(range(1, 20), range(1, 40)):
        if size_out // 2 == size_in or -(-size_out // 2) == size_in:  # what a stride-2 encoder produces
            best = solve_conv_transpose(size_in, size_out, stride=2, max_kernel=5)[0]
            assert_maps(best, size_in, size_out)


def test_dilation() -> None:
    answers = solve_conv_transpose(10, 20, dilation=2, max_kernel=5)
    for setting in answers:
        assert setting.dilation == 2
        assert_maps(setting, 10, 20)


def test_unsolvable_says_why() -> None:
    with pytest.raises(ConvaeError, match="H_OUT < H_IN") as error:
        solve_conv_transpose(28, 14)
    assert "Conv2d or pooling" in str(error.value)
    with pytest.raises(ConvaeError, match="max-kernel"):
        solve_conv_transpose(5, 100)
    with pytest.raises(ConvaeError, match="at least the stride"):
        solve_conv_transpose(7, 14, kernel=1, stride=2)
    with pytest.raises(ConvaeError, match="raise --max-kernel"):
        solve_conv_transpose(2, 16, stride=8)
    # shrinking a little is possible: stride 1 with padding crops
    assert_maps(solve_conv_transpose(10, 8)[0], 10, 8)


def test_non_square_solutions_build_the_right_layer() -> None:
    for (h_in, w_in), (h_out, w_out) in [((7, 10), (14, 30)), ((14, 8), (28, 16)), ((5, 9), (9, 18)), ((3, 3), (7, 5))]:
        heights, widths = solve_conv_transpose_2d((h_in, w_in), (h_out, w_out))
        best = DeconvSetting2d(heights[0], widths[0])
        layer = best.build(2, 3)
        assert real_hw(layer, h_in, w_in, channels=2) == (h_out, w_out)
        namespace = {"nn": nn}
        pasted = eval(best.to_torch(2, 3), namespace)
        assert real_hw(pasted, h_in, w_in, channels=2) == (h_out, w_out)
    with pytest.raises(ConvaeError, match="^width: "):
        solve_conv_transpose_2d((7, 28), (14, 14))


def test_report_text_and_data() -> None:
    text, data = solve_report((14, 14), (28, 28))
    assert text.splitlines()[-1].strip() == "nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)"
    assert "checkerboard-prone" in text and "clean inverse" in text
    assert data["top"] == "nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)"
    assert data["height"][0]["kernel"] == 2


# -- the CLI ---------------------------------------------------------------------------------------


def test_cli_solve_deconv_pastes_a_working_layer() -> None:
    for args, (h_in, w_in), (h_out, w_out) in [
        (["--in", "14x14", "--out", "28x28"], (14, 14), (28, 28)),
        (["--in", "7", "--out", "28"], (7, 7), (28, 28)),
        (["--in", "7x10", "--out", "14x30"], (7, 10), (14, 30)),
        (["--in", "4", "--out", "7", "--stride", "2"], (4, 4), (7, 7)),
    ]:
        result = runner.invoke(app, ["solve-deconv", *args, "--in-channels", "3", "--out-channels", "5"])
        assert result.exit_code == 0, result.output
        line = result.output.strip().splitlines()[-1].strip()
        assert line.startswith("nn.ConvTranspose2d(3, 5, ")
        layer = eval(line, {"nn": nn})
        assert real_hw(layer, h_in, w_in, channels=3) == (h_out, w_out)
    result = runner.invoke(app, ["solve-deconv", "--in", "8", "--out", "16", "--json"])
    data = json.loads(result.output)
    assert data["top"].endswith("kernel_size=2, stride=2)")


def run_console(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(CONVAE), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.skipif(not CONVAE.exists(), reason="console script not installed next to the interpreter")
def test_cli_no_solution_is_one_line_and_exit_2() -> None:
    result = run_console("solve-deconv", "--in", "28", "--out", "14")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "H_OUT < H_IN" in lines[0]
    result = run_console("solve-deconv", "--in", "2x2x2", "--out", "4")
    assert result.returncode == 2 and result.stderr.startswith("error: --in")


# -- the shape table ------------------------------------------------------------------------------

TABLE_SIZES = [(1, 28, 28), (3, 32, 32), (1, 30, 17)]


def manual_forward(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape after each top-level step of each section, by calling the steps by hand."""
    shapes: dict[str, tuple[int, ...]] = {}
    if isinstance(model, AutoEncoder):
        sections = [("encoder", model.encoder), ("decoder", model.decoder)]
    else:
        assert isinstance(model, Classifier)
        sections = [("features", model.features), ("head", model.head)]
    value = model.prepare(x) if isinstance(model, AutoEncoder) else x
    for section, sequential in sections:
        for index, step in enumerate(sequential):
            value = step(value)
            shapes[f"{section}.{index}"] = tuple(code_values(value).shape)
    return shapes


ALL_MODELS = sorted(PRESETS) + sorted(CLASSIFIERS)


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("shape", TABLE_SIZES, ids=lambda s: "x".join(map(str, s)))
def test_shape_table_matches_the_real_forward_pass(name: str, shape: tuple[int, int, int]) -> None:
    table = table_for_preset(name, shape)
    model = build_model(name, shape) if name in PRESETS else build_classifier(name, shape, 10)
    model.eval()
    x = torch.rand(1, *shape)
    with torch.no_grad():
        steps = manual_forward(model, x)
        output = model(x)
    assert table.input_shape == (1, *shape)
    assert table.output_shape == tuple(output.shape)
    assert table.rows[-1].output_shape == tuple(output.shape)
    # each top-level step's output is the output of the last table row inside it
    for step, expected in steps.items():
        inside = [row for row in table.rows if row.name == step or row.name.startswith(step + ".")]
        assert inside, f"no table row for {step}"
        assert inside[-1].output_shape == expected, step
    assert table.total_params == sum(p.numel() for p in model.parameters())
    assert sum(row.params for row in table.rows) == table.total_params
    if isinstance(model, AutoEncoder):
        with torch.no_grad():
            code = code_values(model.encode(x))
        assert table.code_shape == tuple(code.shape[1:])
        assert table.compression == pytest.approx(x[0].numel() / code[0].numel())
        assert [r.section for r in table.rows].count("code") == 1
    # the arithmetic API agrees with every spatial layer the forward pass went through
    modules = dict(model.named_modules())
    for row in table.rows:
        module = modules.get(row.name)
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d)):
            assert layer_out(module, row.input_shape[-2:]) == row.output_shape[-2:], row
        if isinstance(module, nn.ConvTranspose2d):
            expected = row.input_shape[-1] * row.input_shape[-2] * module.weight.numel()
            assert row.macs == expected
        elif isinstance(module, nn.Conv2d):
            assert row.macs == row.output_shape[-1] * row.output_shape[-2] * module.weight.numel()
        elif isinstance(module, nn.Linear):
            assert row.macs == module.weight.numel()
    assert table.total_macs == sum(row.macs for row in table.rows) > 0


def test_shape_table_reference_numbers() -> None:
    table = table_for_preset("unpool", (1, 28, 28))
    assert table.code_shape == (1, 7, 7) and table.code_has_switches
    text = table.to_text()
    assert "784 → 49 = 16× compression" in text
    assert "switches" in text
    cnn = table_for_preset("cnn", (1, 28, 28))
    assert [row.output_shape for row in cnn.rows] == [
        (1, 4, 28, 28), (1, 4, 14, 14), (1, 784), (1, 100), (1, 100), (1, 10)
    ]
    assert cnn.total_params == 40 + 78_500 + 1_010
    conv_pool = table_for_preset("conv-pool", (3, 32, 32))
    assert conv_pool.code_shape == (8, 8, 8)
    assert "3,072 → 512 = 6× compression" in conv_pool.to_text()
    fc = table_for_preset("fc", (1, 28, 28), ["hidden=49"])
    assert "784 → 49 = 16×" in fc.to_text()


def test_shape_table_restores_training_mode_and_traces_plain_modules() -> None:
    model = build_model("conv", (1, 28, 28)).train()
    trace(model, (1, 28, 28))
    assert model.training
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2) if False else nn.Linear(4 * 30 * 30, 2))
    table = trace(plain, (3, 32, 32), name="plain")
    assert table.kind == "module" and table.code_shape is None
    assert table.output_shape == (1, 2)


@pytest.mark.parametrize(
    "name,shape",
    [("unpool", (1, 3, 3)), ("unpool-2level", (1, 3, 9)), ("cnn-deep", (1, 5, 5)), ("conv-pool", (1, 1, 1)), ("cnn", (1, 1, 1))],
)
def test_shape_table_too_small_inputs_give_one_line(name: str, shape: tuple[int, int, int]) -> None:
    with pytest.raises(ModelError) as error:
        table_for_preset(name, shape)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{name} cannot take input")


def test_shape_table_unknown_model_lists_both_kinds() -> None:
    with pytest.raises(ModelError, match="cnn-deep"):
        table_for_preset("resnet", (1, 28, 28))
    with pytest.raises(ModelError, match="no --model-arg"):
        table_for_preset("cnn", (1, 28, 28), ["x=1"])


def test_shape_table_for_run_directories(tmp_path: Path) -> None:
    from convae.core.atomic import write_json

    ae = tmp_path / "ae"
    write_json(ae / "config.json", {"model": {"name": "conv-pool", "params": {"channels": [4, 2]},
                                               "input_shape": [3, 32, 32], "out_channels": 3}})
    table = table_for_run(ae)
    assert table.code_shape == (2, 8, 8)
    assert table_for_run(ae, (3, 20, 20)).code_shape == (2, 5, 5)
    clf = tmp_path / "clf"
    write_json(clf / "config.json", {"kind": "classifier", "model": {"name": "cnn", "input_shape": [1, 28, 28],
                                                                     "n_classes": 3}})
    assert table_for_run(clf).output_shape == (1, 3)
    with pytest.raises(ConvaeError, match="not a run directory"):
        table_for_run(tmp_path)


def test_cli_shapes() -> None:
    result = runner.invoke(app, ["shapes", "unpool", "--input", "1x28x28", "--model-arg", "maps=3"])
    assert result.exit_code == 0, result.output
    assert "3×7×7 = 147 values" in result.output
    result = runner.invoke(app, ["shapes", "cnn-deep", "--input", "3x40x24", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["output_shape"] == [1, 10] and data["layers"][0]["output_shape"] == [1, 16, 40, 24]


def test_cli_shapes_errors_are_one_line_exit_2(tmp_path: Path, cli) -> None:
    for args, needle in [
        (["shapes", "unpool", "--input", "1x3x3"], "unpool cannot take input 1×3×3"),
        (["shapes", "no-such-model"], "unknown model"),
        (["shapes", str(tmp_path / "missing")], "no such run directory"),
        (["shapes", str(tmp_path)], "not a run directory"),
        (["shapes", "conv", "--input", "axb"], "--input"),
        (["shapes", "cnn", "--model-arg", "a=1"], "no --model-arg"),
        (["solve-deconv", "--in", "5", "--out", "100", "--stride", "30"], "raise --max-kernel"),
    ]:
        code, _, stderr = cli(*args)
        assert code == 2, (args, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (args, lines)
    code, stdout, _ = cli("shapes", "strided", "--input", "3x33x20")
    assert code == 0 and "output: 1×3×33×20" in stdout
