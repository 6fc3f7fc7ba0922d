"""The shape contract of every preset, and the AutoEncoder plug-in contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convae.core.errors import ModelError
from convae.models import PRESETS, AutoEncoder, SwitchedCode, build_model, code_values, parse_model_args
from convae.models.codec import CODEC_PRESETS
from convae.models.draem import INSPECT_PRESETS

SIZES = [(1, 28, 28), (3, 32, 32), (1, 30, 30), (3, 64, 48), (2, 15, 17), (1, 9, 40)]


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("shape", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_reconstruction_has_the_input_shape(name: str, shape: tuple[int, int, int]) -> None:
    if name == "draem-large" and shape != SIZES[0]:
        pytest.skip("the reference-width DRAEM (about 80 M parameters) is checked at one size")
    model = build_model(name, shape)
    x = torch.rand(3, *shape)
    y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    # Gradients reach every parameter: no dead branch in the derived decoders (a codec's entropy
    # model learns through the rate term).
    if name in CODEC_PRESETS:
        y, likelihoods = model(x, likelihoods=True)
        (y.sum() - sum(torch.log2(v).sum() for v in likelihoods)).backward()
    elif name in INSPECT_PRESETS:  # the discriminator learns through the segmentation
        y, logits = model(x, segment=True)
        assert logits.shape == (3, 2, *shape[1:])
        (y.sum() + logits.sum()).backward()
    else:
        y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_different_output_channels(name: str) -> None:
    if name in INSPECT_PRESETS:  # DRAEM segments the image it reconstructs: same channels or a clear error
        with pytest.raises(ModelError, match="reconstructs its input"):
            build_model(name, (1, 28, 28), out_channels=3)
        return
    model = build_model(name, (1, 28, 28), out_channels=3)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 3, 28, 28)


def test_reference_code_sizes() -> None:
    def code(name: str, shape, **params):
        model = build_model(name, shape, params).eval()
        return tuple(code_values(model.encode(torch.zeros(1, *shape))).shape[1:])

    assert code("unpool", (1, 28, 28)) == (1, 7, 7)
    assert code("unpool", (1, 28, 28), maps=3) == (3, 7, 7)
    assert code("unpool", (1, 28, 28), pool=2) == (1, 14, 14)
    assert code("unpool-2level", (1, 28, 28)) == (1, 7, 7)
    assert code("conv-pool", (3, 32, 32)) == (8, 8, 8)
    assert code("fc", (1, 28, 28)) == (200,)
    assert code("conv", (1, 28, 28), latent_dim=49) == (49,)


def test_reference_layer_settings() -> None:
    conv_pool = build_model("conv-pool", (3, 32, 32))
    deconvs = [m for m in conv_pool.decoder if isinstance(m, nn.ConvTranspose2d)]
    assert [(d.in_channels, d.out_channels, d.kernel_size, d.stride) for d in deconvs] == [
        (8, 16, (2, 2), (2, 2)),
        (16, 3, (2, 2), (2, 2)),
    ]
    unpool = build_model("unpool", (1, 28, 28))
    deconv = [m for m in unpool.decoder.modules() if isinstance(m, nn.ConvTranspose2d)][0]
    assert deconv.kernel_size == (5, 5) and deconv.padding == (2, 2) and deconv.bias is None
    fc = build_model("fc", (1, 28, 28))
    assert [m.out_features for m in fc.modules() if isinstance(m, nn.Linear)] == [200, 784]


def test_odd_sizes_use_no_output_padding_where_kernel_equals_stride_cannot() -> None:
    model = build_model("conv-pool", (1, 30, 30))  # 30 -> 15 -> 7 -> 15 -> 30
    deconvs = [m for m in model.decoder if isinstance(m, nn.ConvTranspose2d)]
    assert deconvs[0].kernel_size == (3, 3) and deconvs[0].output_padding == (0, 0)
    assert deconvs[1].kernel_size == (2, 2)


def test_unpool_code_carries_switches() -> None:
    model = build_model("unpool", (1, 28, 28))
    code = model.encode(torch.rand(2, 1, 28, 28))
    assert isinstance(code, SwitchedCode)
    assert code.values.shape == (2, 1, 7, 7)
    assert model.decode(code).shape == (2, 1, 28, 28)


def test_any_pair_plugs_in() -> None:
    model = AutoEncoder(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 1, 3, padding=1))
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(model(x), model.decode(model.encode(x)))


def test_model_args_are_typed_and_checked() -> None:
    assert parse_model_args("unpool", ["maps=3", "pool=2"])["maps"] == 3
    assert parse_model_args("conv-pool", ["channels=32,16"])["channels"] == (32, 16)
    with pytest.raises(ModelError, match="no parameter 'width'"):
        parse_model_args("unpool", ["width=3"])
    with pytest.raises(ModelError, match="not a valid int"):
        parse_model_args("unpool", ["maps=three"])
    with pytest.raises(ModelError, match="unknown model"):
        build_model("nope", (1, 28, 28))


def test_too_small_input_is_one_clear_error() -> None:
    with pytest.raises(ModelError, match="too small"):
        build_model("unpool", (1, 3, 3))


@pytest.mark.parametrize("code", [16, 49, 196])
@pytest.mark.parametrize(
    "extra",
    [{}, {"blocks": 0}, {"blocks": 2, "residual": True}, {"hidden": 64, "act": "silu"}, {"width": 8, "levels": 3}],
)
def test_conv_options_keep_shapes_and_code_size(code: int, extra: dict) -> None:
    model = build_model("conv", (1, 28, 28), {"latent_dim": code, **extra}).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert tuple(code_values(model.encode(x)).shape) == (2, code)
        assert model(x).shape == x.shape


def test_conv_defaults_are_the_original_architecture() -> None:
    # Runs trained before the new options must still load: same names, same shapes.
    default = build_model("conv", (1, 28, 28)).state_dict()
    explicit = build_model(
        "conv", (1, 28, 28), {"latent_dim": 32, "width": 32, "levels": 2, "blocks": 1, "residual": False,
                              "hidden": 0, "act": "relu"}
    ).state_dict()
    assert {k: v.shape for k, v in default.items()} == {k: v.shape for k, v in explicit.items()}
    assert len(default) == 60 and sum(v.numel() for k, v in default.items() if "running" not in k
                                       and "num_batches" not in k) == 405089


def test_conv_options_change_the_network_and_are_checked() -> None:
    plain = build_model("conv", (1, 28, 28), {"blocks": 0})
    deeper = build_model("conv", (1, 28, 28), {"blocks": 2, "residual": True, "hidden": 128})
    assert sum(p.numel() for p in deeper.parameters()) > sum(p.numel() for p in plain.parameters())
    assert any(type(m).__name__ == "Residual" for m in deeper.modules())
    assert parse_model_args("conv", ["residual=true", "hidden=128", "act=gelu"])["residual"] is True
    with pytest.raises(ModelError, match="act"):
        build_model("conv", (1, 28, 28), {"act": "tanhh"})
    with pytest.raises(ModelError, match="blocks"):
        build_model("conv", (1, 28, 28), {"blocks": -1})


def test_conv_scales_its_depth_and_code_with_the_input() -> None:
    """Deep enough for the input (to ≤ 8 px), bounded work per level, a spatial code at large sizes."""
    from convae.models.presets import auto_levels
    from convae.tables.layers import table_for_preset

    assert [auto_levels(s, s) for s in (6, 16, 28, 32, 64, 256, 1000)] == [2, 2, 2, 2, 3, 5, 7]
    big = build_model("conv", (3, 256, 256)).eval()
    with torch.no_grad():
        code = big.encode(torch.rand(1, 3, 256, 256))
        assert tuple(code.shape) == (1, 8, 8, 8)  # spatial: code_channels × 8 × 8
        assert big.decode(code).shape == (1, 3, 256, 256)
    macs = table_for_preset("conv", (3, 256, 256)).total_macs
    assert macs <= 0.3e9, macs
    assert sum(p.numel() for p in big.parameters()) < 1_000_000
    # Small images keep the dense bottleneck and the architecture they had (CIFAR-10 too).
    cifar = build_model("conv", (3, 32, 32))
    assert cifar.encoder[-1].out_features == 32 and isinstance(cifar.encoder[-2], torch.nn.Flatten)
    assert tuple(cifar.encoder[-1].weight.shape) == (32, 64 * 8 * 8)


def test_the_discriminator_sees_a_reconstruction_out_of_the_pixel_range_clamped_to_it() -> None:
    """An inspect run's reconstruction can overshoot on an unseen defect (no output activation); the
    defect map must then be that of the reconstruction clamped to [0, 1], not of the overshoot."""
    model = build_model("draem", (3, 32, 32), {"width": 4, "disc_width": 4}).eval()
    last = model.decoder[-1]
    x = torch.rand(2, 3, 32, 32)
    maps = {}
    with torch.no_grad():
        for level in (1.0, 5.0, -4.0, 0.0):  # each makes the whole reconstruction that value
            last.weight.zero_()
            last.bias.fill_(level)
            maps[level], reconstruction = model.defect_map(x)
            assert torch.allclose(reconstruction, torch.full_like(x, level))  # what the network drew, unclamped
    assert torch.equal(maps[5.0], maps[1.0]) and torch.equal(maps[-4.0], maps[0.0])
    assert not torch.allclose(maps[1.0], maps[0.0])  # the discriminator does see the reconstruction
