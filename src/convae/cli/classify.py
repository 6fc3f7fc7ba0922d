"""``convae classify ...``: classifier training, evaluation, prediction and linear probes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from convae.cli._app import (
    app,
    data_dir_option,
    engine_option,
    err,
    fail_files,
    onnx_option,
    open_run,
    out,
)
from convae.cli.settings import config_flags, plan_run
from convae.core.errors import ConvaeError

classify_app = typer.Typer(
    help="Train, evaluate and use image classifiers (cnn, cnn-deep); probe autoencoder codes.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(classify_app, name="classify")


@classify_app.command("train")
def classify_train(
    dataset: Optional[str] = typer.Option(None, help="mnist (default), fashion-mnist, cifar10, mnist-sample, folder:PATH or mvtec:PATH"),
    model: Optional[str] = typer.Option(None, help="cnn (the reference, default) or cnn-deep"),
    epochs: Optional[int] = typer.Option(None, help="epochs (default: the preset's)"),
    batch_size: Optional[int] = typer.Option(None, help="mini-batch size (default: the preset's; cnn 256)"),
    lr: Optional[float] = typer.Option(None, help="learning rate (default: the preset's; cnn 0.01)"),
    optimizer: Optional[str] = typer.Option(None, help="sgd, adam or adamw (default: the preset's)"),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum (cnn: 0, as the reference)"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="weight decay"),
    lr_schedule: Optional[str] = typer.Option(None, "--lr-schedule", "--schedule", help="learning-rate schedule: none, onecycle or cosine"),
    augment: Optional[str] = typer.Option(None, help="none or shift (random ±2 px translations)"),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help="share of the training split held out for validation (default 0.2)"),
    split_seed: Optional[int] = typer.Option(None, "--split-seed", help="seed of the train/val split (default 0)"),
    seed: Optional[int] = typer.Option(None, help="one seed for Python, NumPy and torch (default 0)"),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic", help="deterministic algorithms (bit-identical reruns)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="run directory (default: runs/classify-MODEL-DATASET-TIME)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder holding MNIST/, FashionMNIST/, CIFAR10-png/"),
    channels: Optional[int] = typer.Option(None, help="convert images to 1 or 3 channels"),
    image_size: Optional[str] = typer.Option(None, help="resize images to H or HxW"),
    device: Optional[str] = typer.Option(None, help="auto (default), cpu or cuda"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch"),
    limit: Optional[int] = typer.Option(None, help="use only the first N training images (quick checks)"),
    checkpoint_every: Optional[int] = typer.Option(None, help="also checkpoint every N steps (0, the default: per epoch only)"),
    max_time: Optional[str] = typer.Option(None, "--max-time", help="stop cleanly at the next step after this long (90s, 10m, 2h): checkpoint and evaluation as for a finished run; --resume continues"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with these options, or a run's config.json to repeat it (flags win)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="any setting by its config.json name, KEY=VALUE as in TOML (repeatable; flags win)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    logger: Optional[str] = typer.Option(None, "--logger", help="tensorboard,csv (default), one of them, or none"),
) -> None:
    """Train a classifier into a run directory (config.json, model.safetensors, metrics.jsonl).

    \b
    Examples:  convae classify train --dataset mnist --model cnn-deep --out runs/cnn-deep
               convae classify train --dataset mnist --model cnn-deep --out runs/cnn-deep --resume
    The same command with --resume continues a run (a larger --epochs extends it).
    """
    from convae.applications.classify import ClassifyConfig, train_classifier

    flags = config_flags(locals(), ClassifyConfig)
    cfg, out_dir = plan_run(ClassifyConfig, flags, config=config, sets=set_, out_dir=out_dir, resume=resume,
                            verb="convae classify train", kind="classifier", prefix="classify-")
    if momentum is not None and not resume and (used := cfg.resolved().optimizer) != "sgd":
        raise ConvaeError(f"--momentum {momentum} has no effect with --optimizer {used}; add --optimizer sgd")
    result = train_classifier(cfg, out_dir, log=lambda line: err.print(line, markup=False, highlight=False),
                              resume=resume, progress=progress)
    if result.get("test_accuracy") is not None:
        out.print(f"done: {out_dir}  (test accuracy {100 * result['test_accuracy']:.2f}%)", markup=False,
                  highlight=False)


@classify_app.command("evaluate")
def classify_evaluate(
    run_dir: Path = typer.Argument(..., help="classifier run directory"),
    split: str = typer.Option("test", help="train or test"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    data_dir: Optional[Path] = data_dir_option(),
) -> None:
    """Accuracy and confusion matrix (text, and RUN_DIR/figures/confusion-SPLIT.png)."""
    from convae.applications.classify import confusion_text, evaluate_classifier

    run = open_run(run_dir, "classifier", "convae classify evaluate", data_dir=data_dir)
    result = evaluate_classifier(run, split=split, device=device)
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
    images: list[Path] = typer.Argument(..., help="image files and/or folders (searched recursively), any size"),
    invert: bool = typer.Option(False, "--invert", help="invert the images first (dark digits on white paper)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object per image"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    engine: Optional[str] = engine_option(),
    onnx: Optional[Path] = onnx_option(),
) -> None:
    """Label and class probabilities of each image (converted to the model's input size and channels).

    \b
    Example:  convae classify predict runs/cnn digits/ --invert
    Exit code 2 if a file could not be read (the others are still labelled).
    """
    from convae.applications.classify import predict_images
    from convae.applications.export.engine import open_engine

    run = open_run(run_dir, "classifier", "convae classify predict")
    model = open_engine(run, engine, onnx, "classify", "convae classify predict")
    results = predict_images(run, images, invert=invert, device=device, engine=model)
    for result in results:
        if "error" in result:
            continue
        if as_json:
            print(json.dumps(result))
            continue
        ranked = sorted(result["probabilities"].items(), key=lambda item: -item[1])
        others = "  ".join(f"{name}:{p:.3f}" for name, p in ranked[:3])
        print(f"{result['path']}: {result['label']} ({result['probability']:.3f})   top: {others}")
    failed = [(r["path"], r["error"]) for r in results if "error" in r]
    fail_files(failed, len(results), f"the other {len(results) - len(failed)} were labelled")


@classify_app.command("probe")
def classify_probe(
    run_dir: Path = typer.Argument(..., help="autoencoder run directory (from `convae train`)"),
    limit: Optional[int] = typer.Option(None, help="fit on the first N training images only (faster)"),
    max_iter: int = typer.Option(500, "--max-iter", help="lbfgs iterations"),
    baseline: bool = typer.Option(False, "--baseline", help="also fit the probe on raw pixels, for comparison"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    data_dir: Optional[Path] = data_dir_option(),
) -> None:
    """Linear probe: logistic regression on the codes of the training split, scored on the test split."""
    from convae.applications.classify import probe_autoencoder, probe_text

    run = open_run(run_dir, "autoencoder", "convae classify probe", data_dir=data_dir)
    result = probe_autoencoder(
        run, limit=limit, max_iter=max_iter, baseline=baseline, device=device,
        log=lambda line: err.print(line, markup=False, highlight=False),
    )
    print(json.dumps(result) if as_json else probe_text(result))
