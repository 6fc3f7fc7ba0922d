"""Verbs that make and inspect autoencoder runs: train, evaluate, show, report, models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from convae.cli._app import app, data_dir_option, err, note, open_run, out, plural, print_table
from convae.cli.settings import config_flags, plan_run, toml_text


@app.command()
def train(
    dataset: Optional[str] = typer.Option(None, help="mnist, fashion-mnist, cifar10, mnist-sample, folder:PATH or mvtec:PATH (an inspection folder) (default: MNIST if found, else mnist-sample)"),
    model: Optional[str] = typer.Option(None, help="model preset (see `convae models`); default conv, unet for --task denoise and colorize, draem for --task inspect"),
    model_arg: Optional[list[str]] = typer.Option(None, "--model-arg", help="preset parameter KEY=VALUE (repeatable)"),
    epochs: Optional[int] = typer.Option(None, help="epochs (default: the preset's reference setting)"),
    batch_size: Optional[int] = typer.Option(None, help="mini-batch size (default: the preset's)"),
    lr: Optional[float] = typer.Option(None, help="learning rate (default: the preset's)"),
    loss: Optional[str] = typer.Option(None, help="mse, bce or l1, or rd:LAMBDA for a codec (λ·255²·MSE + bpp); "
                                       "default: the preset's"),
    optimizer: Optional[str] = typer.Option(None, help="adam (default) or sgd"),
    lr_schedule: Optional[str] = typer.Option(None, help="none, cosine or onecycle: the learning rate over the whole run (default: the preset's; none, or cosine for unet)"),
    seed: Optional[int] = typer.Option(None, help="one seed for Python, NumPy and torch (default 0)"),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic", help="use deterministic algorithms (bit-identical reruns on CPU)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="run directory (default: runs/MODEL-DATASET-TIME)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with these options, or a run's config.json to repeat it (flags win)"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="any setting by its config.json name, KEY=VALUE as in TOML (repeatable; flags win)"),
    print_config: bool = typer.Option(False, "--print-config", help="print the resolved settings as TOML and exit"),
    data_dir: Optional[Path] = typer.Option(None, help="folder holding MNIST/, FashionMNIST/, CIFAR10-png/ (default: $CONVAE_DATA, then the cache)"),
    channels: Optional[int] = typer.Option(None, help="convert images to 1 or 3 channels"),
    image_size: Optional[str] = typer.Option(None, help="resize images to H or HxW"),
    patch: Optional[int] = typer.Option(None, "--patch", help="train on random NxN crops of images of any size; whole images then go through the model in overlapping tiles"),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda"),
    checkpoint_every: Optional[int] = typer.Option(None, help="also checkpoint every N steps (0: per epoch only)"),
    max_time: Optional[str] = typer.Option(None, "--max-time", help="stop cleanly at the next step after this long (90s, 10m, 2h): checkpoint and evaluation as for a finished run; --resume continues"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: $OMP_NUM_THREADS, else all cores)"),
    task: Optional[str] = typer.Option(None, help="reconstruct (default), denoise, colorize, or inspect (DRAEM on an mvtec:PATH: learns from good parts with simulated defects)"),
    crop: Optional[int] = typer.Option(None, "--crop", help="inspect: train on random NxN crops of the parts, about (H*W)/N^2 steps for each whole-part step (default 0: whole parts); detect still sees whole parts"),
    anomaly_source: Optional[Path] = typer.Option(None, "--anomaly-source", help="inspect: a folder of images to fill simulated defects from (default: the parts themselves, jittered, and Perlin textures)"),
    noise: Optional[str] = typer.Option(None, help="input corruption: gaussian:SIGMA (or LOW-HIGH, blind), poisson:PEAK, "
                                        "jpeg:QUALITY (or LOW-HIGH), salt-pepper:AMOUNT, mask:FRACTION"),
    normal_classes: Optional[str] = typer.Option(None, help="train only on these classes, as indices or names, e.g. 0,1 or cat,dog (anomaly detection)"),
    color_output: Optional[str] = typer.Option(None, help="colorize: chroma[:SIGMA[:GAIN]] (default chroma:4:0.6: the gray input's luma + a colour offset smoothed by a Gaussian of SIGMA px and scaled by GAIN at inference) or rgb"),
    val_fraction: Optional[float] = typer.Option(None, help="hold out this fraction of the training split for validation (default 0, or 0.1 with --normal-classes)"),
    precision: Optional[str] = typer.Option(None, help="fp32, bf16 (autocast; a win on recent GPUs and CPUs with bf16 units, a loss elsewhere) or auto (bf16 where the device has bf16 units). Default: fp32"),
    compile_model: Optional[bool] = typer.Option(None, "--compile", help="torch.compile the model before training"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    logger: Optional[str] = typer.Option(None, "--logger", help="tensorboard,csv (default: RUN/tb/ for `tensorboard --logdir runs`, and metrics.csv), one of them, or none"),
    then_report: bool = typer.Option(False, "--report", help="afterwards evaluate, draw the figures and write report.html"),
) -> None:
    """Train an autoencoder into a run directory.

    \b
    Examples:  convae train --dataset mnist --model unpool --epochs 5 --out runs/unpool
               convae train --dataset folder:photos --image-size 64 --out runs/photos
               convae train --dataset folder:photos --patch 64 --task denoise --out runs/photo-denoiser
               convae train --dataset mvtec:bottle --task inspect --max-time 10m --out runs/bottle
               convae train --dataset cifar10 --model codec --loss rd:0.013 --max-time 15m --out runs/codec
               convae train --dataset mnist --model unpool --epochs 5 --out runs/unpool --resume
               convae train --config runs/unpool/config.json --out runs/again
    The same command with --resume continues a run (a larger --epochs extends it).
    Under torchrun --nproc_per_node=N -m convae train --out RUN ... the processes train one model
    together (DistributedDataParallel; --batch-size is the global batch).
    """
    from convae.training import TrainConfig, Trainer

    flags = config_flags(locals(), TrainConfig, compile="compile_model")
    cfg, out_path = plan_run(TrainConfig, flags, config=config, sets=set_, out_dir=out_dir, resume=resume,
                             verb="convae train", kind="autoencoder", model_pairs=model_arg or [],
                             print_config=print_config)
    if print_config:
        print(toml_text(cfg.resolved().to_dict()), end="")
        return
    trainer = Trainer(cfg, out_path, progress=progress, console=err)
    last = trainer.fit(resume=resume)
    if not trainer.ranks.is_main:
        return  # under torchrun, rank 0 reports for all
    if trainer.stopped_on_time:
        out.print(f"stopped on time: {out_path} {trainer.stopped_on_time['where']}  (test {last.get('loss')} "
                  f"{last.get('test_loss', float('nan')):.5f}); continue with a larger --max-time (or none) plus --resume",
                  markup=False, highlight=False)
    elif not trainer.already_complete:
        out.print(f"done: {out_path}  (final test {last.get('loss')} {last.get('test_loss', float('nan')):.5f})",
                  markup=False, highlight=False)
    if (line := _keep_best_line(last)) is not None:
        out.print(line, markup=False, highlight=False)
    if then_report:
        _report_after_training(out_path, trainer.config.device)


def _keep_best_line(last: dict) -> str | None:
    """What an inspect run's end did about its best epoch (convae.training.keep_best), when its check fell."""
    if last.get("kept_epoch"):
        memorised = (f", and the last weights redraw held-out good parts {last['memorisation']:.2f}× as badly as "
                     "training parts" if last.get("memorisation") else "")
        return (f"kept epoch {last['kept_epoch']}: its held-out check (pixel AUROC {last['kept_check']:.3f}, mean of "
                f"up to {last['kept_window']} epochs) beat the last evaluation's ({last['last_check']:.3f})"
                f"{memorised}; model.safetensors holds it, state.pt the last weights for --resume")
    if last.get("not_kept"):
        from convae.training.keep_best import MEMORISED

        fell = last["not_kept"]
        return (f"the held-out check fell below epoch {fell['epoch']}'s (pixel AUROC {fell['last_check']:.3f} against "
                f"{fell['check']:.3f}), but the last weights redraw held-out good parts {fell['memorisation']:.2f}× "
                f"as badly as training parts, under the {MEMORISED:g}× of a memorised run: they stay in "
                "model.safetensors")
    return None


def _report_after_training(run_dir: Path, device: str) -> None:
    """`train --report`: evaluate, draw the figures and write report.html."""
    from convae.applications.evaluate import evaluate_run
    from convae.applications.show import show_classes, show_run
    from convae.report.page import write_report
    from convae.run import Run

    result = evaluate_run(run_dir, device=device)
    out.print(f"test RMSE {result['rmse']:.4f}  PSNR {result['psnr']:.2f} dB  SSIM {result['ssim']:.4f}")
    for path in [*show_run(run_dir, device=device), show_classes(run_dir, device=device)]:
        if path is not None:
            out.print(f"wrote {path}", markup=False, highlight=False)
    _application_results(Run.open(run_dir), device)
    out.print(f"wrote {write_report(run_dir)}")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="run directory"),
    split: str = typer.Option("test", help="train or test"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    batch_size: int = typer.Option(256, help="evaluation batch size"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    dataset: Optional[str] = typer.Option(None, help="where the run's dataset is now, e.g. folder:NEW/PATH (default: the run's)"),
    data_dir: Optional[Path] = data_dir_option(),
    rate: bool = typer.Option(False, "--rate", help="rate–distortion instead: bpp vs PSNR/SSIM per --bits setting next to PNG/JPEG/WebP"),
    rate_images: int = typer.Option(1000, "--rate-images", help="with --rate: a seeded random N images of the split"),
) -> None:
    """Metrics of an autoencoder run: MSE, RMSE, PSNR, SSIM, BCE, L1 and the MSE per class.

    \b
    Example:  convae evaluate runs/unpool --json
    """
    from convae.applications.evaluate import evaluate_run

    run = open_run(run_dir, "autoencoder", "convae evaluate", data_dir=data_dir, dataset=dataset)
    if rate:
        from convae.cli.codes import print_rate

        print_rate(run, split, rate_images, as_json, device)
        return
    result = evaluate_run(run, split=split, batch_size=batch_size, device=device)
    if as_json:
        print(json.dumps(result))
        return
    if "baseline_psnr" in result:  # denoise / colorize: the model next to doing nothing and a classical baseline
        from convae.cli.restore import print_restoration

        print_restoration(run_dir, split, result)
        return
    print_table(f"{run_dir} — {result['dataset']} {split} split ({result.get('measured_on') or plural(result['images'], 'image')})", ("metric", "value"),
                [(key.upper(), f"{result[key]:.5f}" if key != "psnr" else f"{result[key]:.2f} dB")
                 for key in ("mse", "rmse", "psnr", "ssim", "bce", "l1")])
    print_table("mean squared error per class", ("class", "MSE"),
                [(name, f"{value:.5f}") for name, value in result["per_class_mse"].items()])
    note(result["conventions"])


@app.command()
def show(
    run_dir: Path = typer.Argument(..., help="run directory"),
    n: int = typer.Option(5, "-n", help="how many test images"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    latent: bool = typer.Option(False, "--latent", help="also draw the 2-D map of the test codes (PCA, t-SNE) and interpolation strips"),
    dataset: Optional[str] = typer.Option(None, help="where the run's dataset is now, e.g. folder:NEW/PATH (default: the run's)"),
    data_dir: Optional[Path] = data_dir_option(),
) -> None:
    """Draw originals, codes and reconstructions, and the loss curve, into RUN_DIR/figures/.

    \b
    Example:  convae show runs/unpool -n 8 --latent
    """
    from convae.applications.show import show_run

    run = open_run(run_dir, "autoencoder", "convae show", data_dir=data_dir, dataset=dataset)
    if latent:
        from convae.applications.codes import show_latent

        for path in show_latent(run, device=device):
            out.print(f"wrote {path}", markup=False, highlight=False)
    for path in show_run(run, n=n, device=device):
        out.print(f"wrote {path}", markup=False, highlight=False)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="run directory (any kind)"),
    device: str = typer.Option("auto", help="auto, cpu or cuda (to evaluate and draw what is missing)"),
    data_dir: Optional[Path] = data_dir_option(),
) -> None:
    """Write RUN_DIR/report.html: a summary, each application's results and figures, the settings, on one page.

    What the page needs and the run lacks (the test evaluation, the reconstructions and the loss
    curve) is computed first; what `detect --eval`, `evaluate --rate` and `show --latent` stored is
    shown in their sections.

    \b
    Example:  convae report runs/unpool && xdg-open runs/unpool/report.html
    """
    from convae.report.page import write_report

    run = open_run(run_dir, data_dir=data_dir)
    if not run.artifact("eval-test.json").exists():
        if run.config.kind == "classifier":
            from convae.applications.classify import evaluate_classifier

            evaluate_classifier(run, device=device)
        else:
            from convae.applications.evaluate import evaluate_run

            evaluate_run(run, device=device)
    if run.config.kind != "classifier":
        from convae.applications.show import show_classes, show_run

        if not (run.figures / "loss.png").exists():
            show_run(run, device=device)
        if not (run.figures / "reconstructions-per-class.png").exists():
            show_classes(run, device=device)
        _application_results(run, device)
    out.print(f"wrote {write_report(run)}", markup=False, highlight=False)


def _application_results(run: Any, device: str) -> None:
    """What a run's report shows of its application, measured unless stored: a codec's RD point
    beside JPEG, WebP and AVIF; an inspection run's detection (ROC, gallery of parts, per defect type)."""
    from convae.applications.anomaly import EVAL_FILE, evaluate_detection
    from convae.applications.codes.codec_io import is_codec_run
    from convae.run.config import inspection_dataset

    if is_codec_run(run) and not run.artifact("rate-test.json").exists():
        from convae.applications.codes import evaluate_rate

        evaluate_rate(run, limit=200, device=device)
    if inspection_dataset(run.config.training.dataset) and not run.artifact(EVAL_FILE).exists():
        evaluate_detection(run, device=device, log=note)


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="two or more run directories"),
    out_path: Optional[Path] = typer.Option(None, "--out", help="also write this HTML page (e.g. compare.html)"),
    images: int = typer.Option(6, help="test images reconstructed by each run on the page"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    """Runs side by side: their numbers, the settings that differ, and (with --out) loss curves and pictures.

    \b
    Example:  convae compare runs/unpool runs/unpool-3maps --out compare.html
    """
    from convae.applications.compare import compare_runs

    result = compare_runs(run_dirs, out=out_path, images=images, device=device)
    print_table("numbers", ["", *result["names"]], result["metrics"])
    if result["differences"]:
        print_table("settings that differ", ["setting", *result["names"]], result["differences"])
    else:
        note("the runs have the same settings")
    if out_path is not None:
        out.print(f"wrote {result['page']}", markup=False, highlight=False)


@app.command()
def models() -> None:
    """List every model preset (autoencoders and classifiers) with its parameters, size and training defaults."""
    import torch

    from convae.models import PRESETS, build_model, code_values
    from convae.models.classifier import CLASSIFIERS, build_classifier

    def defaults(training: dict[str, Any]) -> str:
        return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in training.items())

    rows = []
    for name, preset in PRESETS.items():
        model = build_model(name, (1, 28, 28)).eval()
        with torch.no_grad():
            code = tuple(code_values(model.encode(torch.zeros(1, 1, 28, 28))).shape[1:])
        params = " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in preset.params.items())
        rows.append((name, "autoencoder", params or "—", "×".join(map(str, code)),
                     f"{sum(p.numel() for p in model.parameters()):,}", defaults(preset.training), preset.summary))
    for name, classifier in CLASSIFIERS.items():
        model = build_classifier(name, (1, 28, 28), 10)
        rows.append((name, "classifier (convae classify)", "—", "10 logits", f"{sum(p.numel() for p in model.parameters()):,}",
                     defaults(classifier.training), classifier.summary))
    print_table("model presets (code size and weights for a 1×28×28 input)",
                ("name", "kind", "parameters", "code", "weights", "training defaults", "what it is"), rows)
