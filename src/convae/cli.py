"""The ``convae`` command. Every verb is a thin call into the library.

User-fixable problems arrive here as ConvaeError and leave as one line on stderr with
exit code 2; nothing a user typed should ever produce a traceback.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from convae.errors import ConvaeError

app = typer.Typer(
    name="convae",
    help="Train, evaluate and inspect convolutional image autoencoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


def _parse_image_size(text: str | None) -> tuple[int, int] | None:
    from convae.shapes import parse_size  # noqa: PLC0415

    if text is None:
        return None
    size = parse_size(text, what="--image-size")
    if len(size) == 1:
        return (size[0], size[0])
    if len(size) != 2:
        raise ConvaeError(f"--image-size {text!r} must be H or HxW")
    return (size[0], size[1])


def _parse_classes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        classes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConvaeError(f"--normal-classes {text!r} must be class indices like 0,1,2") from None
    if not classes:
        raise ConvaeError("--normal-classes needs at least one class index")
    return classes


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib  # noqa: PLC0415
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # noqa: PLC0415
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConvaeError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConvaeError(f"{path}: not valid TOML ({error})") from None
    return data.get("train", data)


@app.command()
def train(
    dataset: Optional[str] = typer.Option(None, help="mnist, fashion-mnist, cifar10, mnist-sample or folder:PATH (default: MNIST if found, else mnist-sample)"),
    model: Optional[str] = typer.Option(None, help="model preset (see `convae models`); default conv"),
    model_arg: Optional[list[str]] = typer.Option(None, "--model-arg", help="preset parameter KEY=VALUE (repeatable)"),
    epochs: Optional[int] = typer.Option(None, help="epochs (default: the preset's reference setting)"),
    batch_size: Optional[int] = typer.Option(None, help="mini-batch size (default: the preset's)"),
    lr: Optional[float] = typer.Option(None, help="learning rate (default: the preset's)"),
    loss: Optional[str] = typer.Option(None, help="mse, bce or l1 (default: the preset's)"),
    optimizer: Optional[str] = typer.Option(None, help="adam (default) or sgd"),
    seed: Optional[int] = typer.Option(None, help="one seed for Python, NumPy and torch (default 0)"),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic", help="use deterministic algorithms (bit-identical reruns on CPU)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="run directory (default: runs/MODEL-DATASET-TIME)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with these options (flags win)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder holding MNIST/, FashionMNIST/, CIFAR10-png/ (default: $CONVAE_DATA, then the cache)"),
    channels: Optional[int] = typer.Option(None, help="convert images to 1 or 3 channels"),
    image_size: Optional[str] = typer.Option(None, help="resize images to H or HxW"),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda"),
    checkpoint_every: Optional[int] = typer.Option(None, help="also checkpoint every N steps (0: per epoch only)"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: all cores)"),
    task: Optional[str] = typer.Option(None, help="reconstruct (default), denoise or colorize"),
    noise: Optional[str] = typer.Option(None, help="input corruption: gaussian:SIGMA, salt-pepper:AMOUNT, mask:FRACTION"),
    normal_classes: Optional[str] = typer.Option(None, help="train only on these class indices, e.g. 0,1,2 (anomaly detection)"),
    val_fraction: Optional[float] = typer.Option(None, help="hold out this fraction of the training split for validation (default 0, or 0.1 with --normal-classes)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    then_report: bool = typer.Option(False, "--report", help="afterwards evaluate, draw the figures and write report.html"),
) -> None:
    """Train an autoencoder into a run directory."""
    from convae.models import parse_model_args  # noqa: PLC0415
    from convae.train import TrainConfig, Trainer  # noqa: PLC0415

    if channels is not None and channels not in (1, 3):
        raise ConvaeError(f"--channels must be 1 or 3, got {channels}")
    settings: dict[str, Any] = _read_toml(config) if config else {}
    flags = {
        "dataset": dataset, "model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "loss": loss, "optimizer": optimizer, "seed": seed, "deterministic": deterministic,
        "data_dir": str(data_dir) if data_dir else None, "channels": channels,
        "image_size": _parse_image_size(image_size), "device": device,
        "checkpoint_every": checkpoint_every, "threads": threads, "task": task, "noise": noise,
        "normal_classes": _parse_classes(normal_classes), "val_fraction": val_fraction,
    }
    settings.update({key: value for key, value in flags.items() if value is not None})
    raw_args = settings.pop("model_args", {})
    out_path = Path(out_dir or settings.pop("out", "") or "")
    settings.pop("out", None)
    unknown = sorted(set(settings) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise ConvaeError(f"{config}: unknown option(s) {', '.join(unknown)}")
    if "image_size" in settings and settings["image_size"] is not None:
        settings["image_size"] = tuple(settings["image_size"])
    model_name = settings.get("model", "conv")
    pairs = [f"{k}={v}" for k, v in raw_args.items()] + list(model_arg or [])
    settings["model_args"] = parse_model_args(model_name, pairs)
    cfg = TrainConfig(**settings)
    if cfg.dataset is None and not resume:
        from convae.data import default_dataset  # noqa: PLC0415

        cfg.dataset = default_dataset(cfg.data_dir)
    if resume:
        if not out_dir:
            raise ConvaeError("--resume needs --out RUN_DIR (the run to continue)")
        fixed = [flag for flag, value in (("--model", model), ("--model-arg", model_arg), ("--dataset", dataset),
                                          ("--config", config), ("--task", task), ("--noise", noise)) if value]
        if fixed:
            raise ConvaeError(f"--resume continues the stored run as it was configured; drop {', '.join(fixed)}")
    elif not out_dir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out_path = Path("runs") / f"{model_name}-{str(cfg.dataset).replace(':', '-').replace('/', '_')}-{stamp}"
    if resume and epochs is None:
        from convae.runs import read_config  # noqa: PLC0415

        cfg.epochs = read_config(out_path)["training"]["epochs"]
    trainer = Trainer(cfg, out_path, progress=progress, console=err)
    last = trainer.fit(resume=resume)
    out.print(f"done: {out_path}  (final test {last.get('loss')} {last.get('test_loss', float('nan')):.5f})")
    if then_report:
        from convae.evaluation import evaluate_run, show_run  # noqa: PLC0415
        from convae.report import write_report  # noqa: PLC0415

        result = evaluate_run(out_path, device=trainer.config.device)
        out.print(f"test RMSE {result['rmse']:.4f}  PSNR {result['psnr']:.2f} dB  SSIM {result['ssim']:.4f}")
        for path in show_run(out_path, device=trainer.config.device):
            out.print(f"wrote {path}")
        out.print(f"wrote {write_report(out_path)}")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="run directory"),
    split: str = typer.Option("test", help="train or test"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    batch_size: int = typer.Option(256, help="evaluation batch size"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Reconstruction metrics (MSE, RMSE, PSNR, SSIM, BCE) of a trained run."""
    from convae.evaluation import evaluate_run  # noqa: PLC0415

    result = evaluate_run(run_dir, split=split, batch_size=batch_size, device=device)
    if as_json:
        print(json.dumps(result))
        return
    if "baseline_psnr" in result:  # denoise / colorize: the model next to doing nothing and a classical baseline
        _print_restoration(run_dir, split, result)
        return
    table = Table(title=f"{run_dir} — {result['dataset']} {split} split ({result['images']} images)")
    for name in ("metric", "value"):
        table.add_column(name)
    for key in ("mse", "rmse", "psnr", "ssim", "bce", "l1"):
        table.add_row(key.upper(), f"{result[key]:.5f}" if key != "psnr" else f"{result[key]:.2f} dB")
    out.print(table)
    per_class = Table(title="mean squared error per class")
    per_class.add_column("class")
    per_class.add_column("MSE")
    for name, value in result["per_class_mse"].items():
        per_class.add_row(name, f"{value:.5f}")
    out.print(per_class)
    out.print(f"[dim]{result['conventions']}[/]")


@app.command()
def show(
    run_dir: Path = typer.Argument(..., help="run directory"),
    n: int = typer.Option(5, "-n", help="how many test images"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Draw originals, codes and reconstructions, and the loss curve, into RUN_DIR/figures/."""
    from convae.evaluation import show_run  # noqa: PLC0415

    for path in show_run(run_dir, n=n, device=device):
        out.print(f"wrote {path}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="run directory")) -> None:
    """Write RUN_DIR/report.html: config, metrics and figures on one self-contained page."""
    from convae.report import write_report  # noqa: PLC0415

    out.print(f"wrote {write_report(run_dir)}")


@app.command()
def models() -> None:
    """List the model presets with their parameters and code size for MNIST."""
    import torch  # noqa: PLC0415

    from convae.models import PRESETS, build_model, code_values  # noqa: PLC0415

    table = Table(title="model presets (code size for a 1×28×28 input)")
    for column in ("name", "parameters", "code", "weights", "what it is"):
        table.add_column(column, overflow="fold")
    for name, preset in PRESETS.items():
        model = build_model(name, (1, 28, 28)).eval()
        with torch.no_grad():
            code = tuple(code_values(model.encode(torch.zeros(1, 1, 28, 28))).shape[1:])
        params = " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in preset.params.items())
        weights = sum(p.numel() for p in model.parameters())
        table.add_row(name, params, "×".join(map(str, code)), f"{weights:,}", preset.summary)
    out.print(table)


@app.command("solve-deconv")
def solve_deconv(
    size_in: str = typer.Option(..., "--in", help="input size H_IN: 14 or 14x14 (HxW for non-square)"),
    size_out: str = typer.Option(..., "--out", help="wanted output size H_OUT: 28 or 28x28"),
    kernel: Optional[int] = typer.Option(None, help="only this kernel size"),
    stride: Optional[int] = typer.Option(None, help="only this stride"),
    max_kernel: int = typer.Option(7, "--max-kernel", help="largest kernel to try"),
    dilation: int = typer.Option(1, help="dilation of the kernel"),
    in_channels: Optional[int] = typer.Option(None, "--in-channels", help="channels for the printed layer"),
    out_channels: Optional[int] = typer.Option(None, "--out-channels", help="channels for the printed layer"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Every ConvTranspose2d (kernel, stride, padding, output_padding) mapping H_IN to H_OUT exactly, best first."""
    from convae.shapes import parse_hw, solve_report  # noqa: PLC0415

    text, data = solve_report(
        parse_hw(size_in, what="--in"), parse_hw(size_out, what="--out"),
        kernel=kernel, stride=stride, max_kernel=max_kernel, dilation=dilation,
        in_channels=in_channels if in_channels is not None else "in_ch",
        out_channels=out_channels if out_channels is not None else "out_ch",
    )
    print(json.dumps(data) if as_json else text)


@app.command("shapes")
def shapes_command(
    target: str = typer.Argument(..., help="a model preset (autoencoder or classifier) or a run directory"),
    input_shape: Optional[str] = typer.Option(None, "--input", help="input CxHxW, HxW or H (default 1x28x28, or the run's)"),
    model_arg: Optional[list[str]] = typer.Option(None, "--model-arg", help="preset parameter KEY=VALUE (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Layer-by-layer table: output shape, parameters and multiply-adds, code size and compression."""
    from convae.shape_table import parse_input_shape, table_for_preset, table_for_run  # noqa: PLC0415

    path = Path(target)
    if path.is_dir():
        if model_arg:
            raise ConvaeError(f"{target}: --model-arg applies to a preset name, not a run directory")
        from convae.runs import CONFIG, read_config  # noqa: PLC0415

        default = tuple(read_config(path)["model"]["input_shape"]) if (path / CONFIG).exists() else (1, 28, 28)
        table = table_for_run(path, parse_input_shape(input_shape, default) if input_shape else None)
    elif path.exists() or "/" in target:
        raise ConvaeError(f"{target}: no such run directory")
    else:
        table = table_for_preset(target, parse_input_shape(input_shape), list(model_arg or []))
    print(json.dumps(table.to_dict()) if as_json else table.to_text())


classify_app = typer.Typer(
    help="Train, evaluate and use image classifiers (cnn, cnn-deep); probe autoencoder codes.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(classify_app, name="classify")


@classify_app.command("train")
def classify_train(
    dataset: str = typer.Option("mnist", help="mnist, fashion-mnist, cifar10, mnist-sample or folder:PATH"),
    model: str = typer.Option("cnn", help="cnn (the reference) or cnn-deep"),
    epochs: Optional[int] = typer.Option(None, help="epochs (default: the preset's)"),
    batch_size: Optional[int] = typer.Option(None, help="mini-batch size (default: the preset's; cnn 256)"),
    lr: Optional[float] = typer.Option(None, help="learning rate (default: the preset's; cnn 0.01)"),
    optimizer: Optional[str] = typer.Option(None, help="sgd, adam or adamw (default: the preset's)"),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum (cnn: 0, as the reference)"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="weight decay"),
    schedule: Optional[str] = typer.Option(None, help="learning-rate schedule: none, onecycle or cosine"),
    augment: Optional[str] = typer.Option(None, help="none or shift (random ±2 px translations)"),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="share of the training split held out for validation"),
    split_seed: int = typer.Option(0, "--split-seed", help="seed of the train/val split"),
    seed: int = typer.Option(0, help="one seed for Python, NumPy and torch"),
    deterministic: bool = typer.Option(False, "--deterministic", help="deterministic algorithms (bit-identical reruns)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="run directory (default: runs/classify-MODEL-DATASET-TIME)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder holding MNIST/, FashionMNIST/, CIFAR10-png/"),
    channels: Optional[int] = typer.Option(None, help="convert images to 1 or 3 channels"),
    image_size: Optional[str] = typer.Option(None, help="resize images to H or HxW"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch"),
    limit: Optional[int] = typer.Option(None, help="use only the first N training images (quick checks)"),
) -> None:
    """Train a classifier into a run directory (config.json, model.safetensors, metrics.jsonl)."""
    from convae.applications.classification import ClassifyConfig, train_classifier  # noqa: PLC0415

    cfg = ClassifyConfig(
        dataset=dataset, data_dir=str(data_dir) if data_dir else None, channels=channels,
        image_size=_parse_image_size(image_size), model=model, epochs=epochs, batch_size=batch_size, lr=lr,
        optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, schedule=schedule, augment=augment,
        val_fraction=val_fraction, split_seed=split_seed, seed=seed, deterministic=deterministic,
        device=device, threads=threads, limit=limit,
    )
    if out_dir is None:
        name = dataset.replace(":", "-").replace("/", "_")
        out_dir = Path("runs") / f"classify-{model}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = train_classifier(cfg, out_dir, log=lambda line: err.print(line, markup=False, highlight=False))
    out.print(f"done: {out_dir}  (test accuracy {100 * result['test_accuracy']:.2f}%)", markup=False, highlight=False)


@classify_app.command("evaluate")
def classify_evaluate(
    run_dir: Path = typer.Argument(..., help="classifier run directory"),
    split: str = typer.Option("test", help="train or test"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Accuracy and confusion matrix (text, and RUN_DIR/figures/confusion-SPLIT.png)."""
    from convae.applications.classification import confusion_text, evaluate_classifier  # noqa: PLC0415

    result = evaluate_classifier(run_dir, split=split, device=device)
    if as_json:
        print(json.dumps(result))
        return
    print(f"{run_dir}: {split} accuracy {100 * result['accuracy']:.2f}% on {result['images']:,} images "
          f"(loss {result['loss']:.4f})")
    print(confusion_text(result["confusion_matrix"], result["classes"]))
    print(f"wrote {result['figure']}")


@classify_app.command("predict")
def classify_predict(
    run_dir: Path = typer.Argument(..., help="classifier run directory"),
    images: list[Path] = typer.Argument(..., help="PNG/JPEG files of any size"),
    invert: bool = typer.Option(False, "--invert", help="invert the images first (dark digits on white paper)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object per image"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Label and class probabilities of each image (converted to the model's input size and channels)."""
    from convae.applications.classification import predict_images  # noqa: PLC0415

    for result in predict_images(run_dir, images, invert=invert, device=device):
        if as_json:
            print(json.dumps(result))
            continue
        ranked = sorted(result["probabilities"].items(), key=lambda item: -item[1])
        others = "  ".join(f"{name}:{p:.3f}" for name, p in ranked[:3])
        print(f"{result['path']}: {result['label']} ({result['probability']:.3f})   top: {others}")


@classify_app.command("probe")
def classify_probe(
    run_dir: Path = typer.Argument(..., help="autoencoder run directory (from `convae train`)"),
    limit: Optional[int] = typer.Option(None, help="fit on the first N training images only (faster)"),
    max_iter: int = typer.Option(500, "--max-iter", help="lbfgs iterations"),
    baseline: bool = typer.Option(False, "--baseline", help="also fit the probe on raw pixels, for comparison"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Linear probe: logistic regression on the codes of the training split, scored on the test split."""
    from convae.applications.classification import probe_autoencoder, probe_text  # noqa: PLC0415

    result = probe_autoencoder(
        run_dir, limit=limit, max_iter=max_iter, baseline=baseline, device=device,
        log=lambda line: err.print(line, markup=False, highlight=False),
    )
    print(json.dumps(result) if as_json else probe_text(result))


def _print_restoration(run_dir: Path, split: str, result: dict[str, Any]) -> None:
    from convae.applications.restore import comparison_rows  # noqa: PLC0415

    table = Table(title=f"{run_dir} — {result['task']} ({result['corruption']}), {result['dataset']} {split} split "
                        f"({result['images']} images)")
    for name in ("restored by", "MSE", "PSNR", "SSIM"):
        table.add_column(name, overflow="fold")
    for what, mse, psnr, ssim in comparison_rows(result):
        table.add_row(what, f"{mse:.5f}", f"{psnr:.2f} dB", f"{ssim:.4f}")
    out.print(table)
    out.print(f"convae gains {result['psnr'] - result['input_psnr']:+.2f} dB over the input and "
              f"{result['psnr'] - result['baseline_psnr']:+.2f} dB over the baseline")
    out.print(f"[dim]{result['conventions']}[/]")


def _restore_command(task: str, run_dir: Path, inputs: list[Path], out_dir: Path, device: str) -> None:
    from convae.applications.restore import restore_files  # noqa: PLC0415

    results = restore_files(run_dir, inputs, out_dir, task=task, device=device)
    for entry in results:
        if entry["ok"]:
            note = f"  ({entry['note']})" if entry["note"] else ""
            out.print(f"{entry['input']} -> {entry['output']}{note}", markup=False, highlight=False, soft_wrap=True)
        else:
            err.print(f"error: {entry['input']}: {entry['error']}", markup=False, highlight=False, soft_wrap=True)
    failed = sum(not entry["ok"] for entry in results)
    if failed:
        raise ConvaeError(f"{failed} of {len(results)} image(s) failed; the others were written to {out_dir}")


@app.command()
def denoise(
    run_dir: Path = typer.Argument(..., help="a run trained with --task denoise"),
    inputs: list[Path] = typer.Argument(..., help="image files and/or folders (searched recursively)"),
    out_dir: Path = typer.Option(..., "--out", help="folder for the restored PNGs (named after the inputs)"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Denoise your images: PNGs into --out. Exit code 2 if any file failed (the rest are still written)."""
    _restore_command("denoise", run_dir, inputs, out_dir, device)


@app.command()
def colorize(
    run_dir: Path = typer.Argument(..., help="a run trained with --task colorize"),
    inputs: list[Path] = typer.Argument(..., help="image files and/or folders (searched recursively); RGB is made gray first"),
    out_dir: Path = typer.Option(..., "--out", help="folder for the RGB PNGs (named after the inputs)"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Colorize gray images: RGB PNGs into --out. Exit code 2 if any file failed (the rest are still written)."""
    _restore_command("colorize", run_dir, inputs, out_dir, device)


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """Warnings (a skipped file, a converted image) as one plain line each."""
    err.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def detect(
    run_dir: Path = typer.Argument(..., help="run directory (best: trained with --normal-classes)"),
    inputs: Optional[list[Path]] = typer.Argument(None, help="image files and/or folders (searched recursively)"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="use this threshold now (not stored)"),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="write path, score, verdict, note per image here"),
    heatmaps: Optional[Path] = typer.Option(None, "--heatmaps", help="folder for PNGs: input, reconstruction, error over input"),
    score: Optional[str] = typer.Option(None, "--score", help="ssim (1 - SSIM, default), mse or l1; default: the stored threshold's"),
    fit: bool = typer.Option(False, "--fit", help="(re)fit the threshold on the run's validation split and store it"),
    method: str = typer.Option("quantile", "--threshold-method", help="quantile, meanstd or f1 (how to fit)"),
    quantile: float = typer.Option(0.99, "--quantile", help="quantile of the normal validation scores (method quantile)"),
    k: float = typer.Option(3.0, "--k", help="mean + k·std of the normal validation scores (method meanstd)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="dataset for --eval (default: the run's)"),
    evaluate: bool = typer.Option(False, "--eval", help="AUROC, AP, F1 on the test split; ROC + histograms into RUN_DIR/figures"),
    normal_classes: Optional[str] = typer.Option(None, "--normal-classes", help="for --eval: class indices counted as normal (default: the run's)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (one object per image, or the --eval result)"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Anomaly detection: score images by reconstruction error and flag those above the threshold.

    The threshold is fitted on the run's held-out normal validation images the first time (or with --fit) and stored in RUN_DIR/threshold.json. Exit code 2 if a file could not be read (the others are still scored and written).
    """
    from convae.applications import anomaly  # noqa: PLC0415

    def log(line: str) -> None:
        err.print(line, markup=False, highlight=False, soft_wrap=True)

    if not inputs and not evaluate and not fit:
        raise ConvaeError("detect needs images or folders to score, --eval, or --fit")
    if method not in anomaly.THRESHOLD_METHODS:
        raise ConvaeError(f"--threshold-method must be one of {', '.join(anomaly.THRESHOLD_METHODS)}, got {method!r}")
    if score is not None:
        anomaly.check_score_kind(score)
    if fit and threshold is not None:
        raise ConvaeError("--fit and --threshold exclude each other (a given threshold is not fitted)")
    how = dict(threshold_value=threshold, score=score, refit=fit, method=method, quantile=quantile, k=k,
               device=device, log=log)
    fitted = None
    if fit and not inputs and not evaluate:
        fitted = anomaly.resolve_threshold(run_dir, value=threshold, score=score, refit=True, method=method,
                                           quantile=quantile, k=k, device=device, log=log)
        out.print(f"threshold {fitted.describe()}; {100 * (fitted.validation_flagged or 0):.1f}% of the validation "
                  f"normals are above it", markup=False, highlight=False)
    if inputs:
        found = anomaly.detect_paths(run_dir, inputs, csv_path=csv_path, heatmaps=heatmaps, **how)
        fitted = found.threshold
        for r in found.results:
            if r.verdict == anomaly.UNREADABLE:
                err.print(f"error: {r.note}", markup=False, highlight=False, soft_wrap=True)
            elif as_json:
                print(json.dumps({"path": r.path, "score": r.score, "score_kind": fitted.score,
                                  "threshold": fitted.value, "verdict": r.verdict, "note": r.note,
                                  "heatmap": r.heatmap}))
            else:
                note = f"  ({r.note})" if r.note else ""
                print(f"{r.path}  {r.score:.6g}  {r.verdict}{note}")
        scored = len(found.results) - len(found.unreadable)
        log(f"{len(found.anomalous)} of {scored} image(s) anomalous; threshold {fitted.describe()}")
        for written in (csv_path, heatmaps):
            if written is not None:
                log(f"wrote {written}")
    if evaluate:
        if fitted is not None:
            how.update(refit=False, threshold_value=None)
        result = anomaly.evaluate_detection(run_dir, dataset=dataset, normal_classes=_parse_classes(normal_classes),
                                            threshold=fitted, **how)
        if as_json:
            print(json.dumps(result))
        else:
            print(f"{result['dataset']} test split: {result['normal_images']} normal "
                  f"({', '.join(result['normal_classes'])}), {result['anomalous_images']} anomalous; "
                  f"{result['score']} score")
            print(f"AUROC {result['auroc']:.4f}  average precision {result['average_precision']:.4f}")
            print(f"at threshold {result['threshold']:.6g}: F1 {result['f1']:.4f}  precision {result['precision']:.4f}  "
                  f"recall {result['recall']:.4f}  normal flagged {100 * result['false_positive_rate']:.1f}%")
            for path in result.get("figures", []) + [result.get("report")]:
                if path:
                    print(f"wrote {path}")
    if inputs and found.unreadable:
        raise ConvaeError(f"{len(found.unreadable)} of {len(found.results)} file(s) could not be read; "
                          f"the other {len(found.results) - len(found.unreadable)} were scored")


def main() -> None:
    """Entry point: one clear line and exit code 2 for user errors."""
    warnings.showwarning = _show_warning
    try:
        app()
    except ConvaeError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
