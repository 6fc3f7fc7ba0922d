"""A layer-by-layer table of a model: output shape, parameters and multiply-adds.

Learners reading an autoencoder want to see the numbers move: 1×28×28 becomes
16×28×28, then 16×14×14, down to the code and back up. The table is recorded from a
real forward pass with hooks on every leaf layer, so it can never disagree with what
the model does, for any input size.

Why not torchinfo: it handles the unpool presets (their encoder returns a
``SwitchedCode``), but it counts a ConvTranspose2d's multiply-adds per *output* pixel,
which overstates a stride-2 layer 4×, and it has no notion of where the code sits. The
hooks here are a few dozen lines and count what the layers really compute:

* Conv2d: output elements × (in_channels / groups) × kernel area
* ConvTranspose2d: *input* elements × (out_channels / groups) × kernel area
* Linear: output elements × in_features

(bias additions and element-wise layers such as BatchNorm or ReLU are not counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from convae.core.errors import ModelError
from convae.models import PRESETS, AutoEncoder, SwitchedCode, build_model, code_values, parse_model_args
from convae.models.classifier import CLASSIFIERS, Classifier, build_classifier
from convae.shapes.sizes import parse_input_shape

__all__ = ["LayerRow", "ShapeTable", "trace", "table_for_preset", "parse_input_shape"]


@dataclass(frozen=True)
class LayerRow:
    """One leaf layer's call in the forward pass."""

    section: str  # "encoder", "code", "decoder", "features", "head", ...
    name: str  # dotted module path, e.g. "encoder.2.layer.0"
    layer: str  # type and the settings that decide the shape, e.g. "Conv2d 1→16 k3 p1"
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass
class ShapeTable:
    """Every leaf layer of one forward pass, plus the totals and the code size."""

    model: str
    kind: str  # "autoencoder", "classifier" or "module"
    input_shape: tuple[int, ...]  # N×C×H×W
    output_shape: tuple[int, ...]
    rows: list[LayerRow]
    total_params: int
    code_shape: tuple[int, ...] | None = None  # without the batch dimension
    code_has_switches: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        return sum(row.macs for row in self.rows)

    @property
    def input_size(self) -> int:
        return _numel(self.input_shape[1:])

    @property
    def code_size(self) -> int | None:
        return None if self.code_shape is None else _numel(self.code_shape)

    @property
    def compression(self) -> float | None:
        """Input values per code value (784 → 49 is 16×)."""
        return None if not self.code_size else self.input_size / self.code_size

    def summary_lines(self) -> list[str]:
        """The lines under the table: code size, compression, totals."""
        lines = []
        if self.code_shape is not None and self.code_size:
            ratio = self.compression or 0.0
            ratio_text = f"{ratio:.0f}×" if abs(ratio - round(ratio)) < 1e-9 else f"{ratio:.2f}×"
            lines.append(
                f"code: {_dims(self.code_shape)} = {self.code_size:,} values; input {_dims(self.input_shape[1:])} = "
                f"{self.input_size:,} → {self.code_size:,} = {ratio_text} compression"
            )
            if self.code_has_switches:
                lines.append(
                    "      (the code also carries max-pool switches: where each maximum was, "
                    "which the unpooling decoder needs)"
                )
        lines.append(f"output: {_dims(self.output_shape)}")
        lines.append(f"total parameters: {self.total_params:,}")
        per = "per image" if self.input_shape[0] == 1 else f"for a batch of {self.input_shape[0]}"
        lines.append(f"multiply-adds {per}: {self.total_macs:,} ({_human(self.total_macs)})")
        return lines + self.notes

    def to_text(self) -> str:
        """A plain-text table (fixed width), then the summary lines."""
        header = ("section", "layer", "type", "output shape", "params", "mult-adds")
        body = [
            (
                row.section,
                row.name,
                row.layer,
                _dims(row.output_shape),
                f"{row.params:,}" if row.params else "-",
                f"{row.macs:,}" if row.macs else "-",
            )
            for row in self.rows
        ]
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *body)]
        right = {4, 5}

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(
                (cell.rjust(width) if index in right else cell.ljust(width))
                for index, (cell, width) in enumerate(zip(cells, widths))
            ).rstrip()

        rule = "-" * len(line(header))
        title = f"{self.model} ({self.kind}) on input {_dims(self.input_shape)}"
        out = [title, rule, line(header), rule]
        previous = None
        for row, cells in zip(self.rows, body):
            if previous is not None and row.section != previous:
                out.append("")
            out.append(line(cells))
            previous = row.section
        out.append(rule)
        out.extend(self.summary_lines())
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "code_shape": None if self.code_shape is None else list(self.code_shape),
            "code_size": self.code_size,
            "compression": self.compression,
            "total_params": self.total_params,
            "total_macs": self.total_macs,
            "layers": [
                {
                    "section": r.section,
                    "name": r.name,
                    "type": r.layer,
                    "output_shape": list(r.output_shape),
                    "params": r.params,
                    "macs": r.macs,
                }
                for r in self.rows
            ],
        }


# -- recording ------------------------------------------------------------------------


def _first_tensor(value: Any) -> torch.Tensor | None:
    """The tensor a layer produced: SwitchedCode values, MaxPool's values (not indices)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, SwitchedCode):
        return value.values
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _macs(module: nn.Module, inputs: torch.Tensor | None, output: torch.Tensor | None) -> int:
    if output is None:
        return 0
    if isinstance(module, nn.ConvTranspose2d) and inputs is not None:
        area = module.kernel_size[0] * module.kernel_size[1]
        return inputs.numel() * (module.out_channels // module.groups) * area
    if isinstance(module, nn.Conv2d):
        area = module.kernel_size[0] * module.kernel_size[1]
        return output.numel() * (module.in_channels // module.groups) * area
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def _describe(module: nn.Module) -> str:
    """The layer's type and the settings that decide its output shape, compactly."""
    kind = type(module).__name__
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        parts = [f"{kind} {module.in_channels}→{module.out_channels}", f"k{_setting(module.kernel_size)}"]
        for short, attr, default in (("s", "stride", 1), ("p", "padding", 0), ("op", "output_padding", 0),
                                     ("d", "dilation", 1)):
            value = getattr(module, attr, default)
            if _setting(value) != str(default):
                parts.append(f"{short}{_setting(value)}")
        if module.bias is None:
            parts.append("no-bias")
        return " ".join(parts)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d, nn.MaxUnpool2d)):
        kernel = _setting(module.kernel_size)
        parts = [kind, f"k{kernel}"]
        stride = _setting(module.stride) if module.stride is not None else kernel
        if stride != kernel:
            parts.append(f"s{stride}")
        if _setting(module.padding) != "0":
            parts.append(f"p{_setting(module.padding)}")
        return " ".join(parts)
    if isinstance(module, nn.Linear):
        return f"{kind} {module.in_features}→{module.out_features}"
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return f"{kind} {module.num_features}"
    if isinstance(module, nn.Flatten) and (module.start_dim, module.end_dim) == (1, -1):
        return kind
    if isinstance(module, nn.Dropout):
        return f"{kind} {module.p:g}"
    if isinstance(module, nn.Upsample):
        how = f"size {module.size}" if module.size is not None else f"×{module.scale_factor}"
        return f"{kind} {how} {module.mode}"
    extra = module.extra_repr()
    return f"{kind} {extra}".strip() if extra and len(extra) <= 30 else kind


def _setting(value: Any) -> str:
    """3 → '3'; (3, 3) → '3'; (3, 5) → '3x5'."""
    if isinstance(value, (tuple, list)):
        return str(value[0]) if len(set(value)) == 1 else "x".join(map(str, value))
    return str(value)


def _recorded_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf layers, plus any container that owns parameters directly (custom layers)."""
    chosen = []
    for name, module in model.named_modules():
        if not name:
            continue
        is_leaf = next(module.children(), None) is None
        owns_params = next(module.parameters(recurse=False), None) is not None
        if is_leaf or owns_params:
            chosen.append((name, module))
    return chosen


def trace(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    name: str = "",
    batch: int = 1,
) -> ShapeTable:
    """Run ``model`` on zeros of ``input_shape`` (C, H, W) and record every leaf layer.

    Autoencoders are run as ``decode(encode(x))`` so the code gets its own row between
    the encoder and decoder sections. The model is traced in eval mode (BatchNorm and
    Dropout as at inference) and its mode restored afterwards. A forward pass that fails
    (an input the model cannot take) raises a one-line ModelError.
    """
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ModelError(f"input shape {'x'.join(map(str, shape))} must be C×H×W with positive sizes")
    rows: list[LayerRow] = []
    handles = []

    def hook_for(module_name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            x_in, x_out = _first_tensor(args), _first_tensor(output)
            rows.append(
                LayerRow(
                    section=module_name.split(".")[0],
                    name=module_name,
                    layer=_describe(module),
                    input_shape=tuple(x_in.shape) if x_in is not None else (),
                    output_shape=tuple(x_out.shape) if x_out is not None else (),
                    params=sum(p.numel() for p in module.parameters(recurse=next(module.children(), None) is None)),
                    macs=_macs(module, x_in, x_out),
                )
            )

        return hook

    for module_name, module in _recorded_modules(model):
        handles.append(module.register_forward_hook(hook_for(module_name)))
    was_training = model.training
    model.eval()
    x = torch.zeros(batch, *shape)
    code_shape: tuple[int, ...] | None = None
    switches = False
    try:
        with torch.no_grad():
            if isinstance(model, AutoEncoder):
                code = model.encode(x)
                values = code_values(code)
                code_shape = tuple(values.shape[1:])
                switches = isinstance(code, SwitchedCode)
                rows.append(LayerRow("code", "code", "code" + (" + switches" if switches else ""),
                                     tuple(values.shape), tuple(values.shape), 0, 0))
                output = model.finish(model.decode(code), x)
            else:
                output = model(x)
    except ModelError:
        raise
    except (RuntimeError, ValueError, IndexError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelError(f"{name or type(model).__name__} cannot take input {_dims(shape)}: {first}") from None
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    out_tensor = _first_tensor(output)
    rows = _with_off_path_rows(model, rows, tuple(out_tensor.shape) if out_tensor is not None else None)
    kind = "autoencoder" if isinstance(model, AutoEncoder) else "classifier" if isinstance(model, Classifier) else "module"
    unique = {id(p): p.numel() for p in model.parameters()}
    return ShapeTable(
        model=name or type(model).__name__,
        kind=kind,
        input_shape=tuple(x.shape),
        output_shape=tuple(out_tensor.shape) if out_tensor is not None else (),
        rows=rows,
        total_params=sum(unique.values()),
        code_shape=code_shape,
        code_has_switches=switches,
    )


def _with_off_path_rows(model: nn.Module, rows: list[LayerRow], output: tuple[int, ...] | None) -> list[LayerRow]:
    """The rows plus what the leaf layers miss: after the code, each part off the image's path (a
    codec's entropy model, so the parameters add up), and a final crop (a model that pads)."""
    seen = {row.name.split(".")[0] for row in rows}
    off_path = [LayerRow("rate", name, f"{type(module).__name__} (rate model, not on the image path)", (), (),
                         sum(p.numel() for p in module.parameters()), 0)
                for name, module in model.named_children()
                if name not in seen and next(module.parameters(), None) is not None]
    at = next((i + 1 for i, row in enumerate(rows) if row.section == "code"), len(rows))
    rows = rows[:at] + off_path + rows[at:]
    if rows and output is not None and rows[-1].output_shape != output:
        rows.append(LayerRow(rows[-1].section, "crop", "crop back to the input size", rows[-1].output_shape,
                             output, 0, 0))
    return rows


# -- presets and run directories ---------------------------------------------------------


def table_for_preset(
    name: str,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    model_args: list[str] | None = None,
    *,
    n_classes: int = 10,
) -> ShapeTable:
    """The table of an autoencoder preset (``PRESETS``) or a classifier preset (``CLASSIFIERS``)."""
    if name in PRESETS:
        params = parse_model_args(name, list(model_args or []))
        model = _build(lambda: build_model(name, input_shape, params), name, input_shape)
    elif name in CLASSIFIERS:
        if model_args:
            raise ModelError(f"classifier {name!r} takes no --model-arg")
        model = _build(lambda: build_classifier(name, input_shape, n_classes), name, input_shape)
    else:
        known = ", ".join(sorted(PRESETS)) + "; classifiers: " + ", ".join(sorted(CLASSIFIERS))
        raise ModelError(f"unknown model {name!r} (and no such run directory); choose one of: {known}")
    return trace(model, input_shape, name=name)


def _build(make: Any, name: str, input_shape: tuple[int, ...]) -> nn.Module:
    """Build a preset; an input it cannot take becomes one line naming the model and the input."""
    try:
        return make()
    except ModelError as error:
        raise ModelError(f"{name} cannot take input {_dims(tuple(input_shape))}: {error}") from None


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for value in shape:
        total *= int(value)
    return total


def _dims(shape: tuple[int, ...]) -> str:
    return "×".join(str(v) for v in shape) if shape else "-"


def _human(count: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return str(count)
