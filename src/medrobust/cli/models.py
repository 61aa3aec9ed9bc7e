"""`medrobust models`, `medrobust train`, `medrobust predict`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from medrobust.cli.app import (
    ArchOption,
    ChannelsLastOption,
    ChannelsOption,
    ClassesOption,
    InputSizeOption,
    IntensityOption,
    OutputKindOption,
    OutputsOption,
    TrustPickleOption,
    WindowOption,
    app,
    console,
    contract_from_options,
    load_cli_model,
    print_skipped,
    same_command,
    user_errors,
)
from medrobust.cli.progress import CliProgress


@app.command("models")
@user_errors
def models_list(pattern: Annotated[str, typer.Argument(help="Shell-style filter, e.g. 'resnet*'.")] = "*") -> None:
    """List the model zoo with parameter counts."""
    import medrobust as mr

    table = Table(title="model zoo (3 classes)")
    for col in ("name", "parameters", "Keras-style count", "channels", "intensity", "ImageNet"):
        table.add_column(col, justify="right" if "count" in col or col == "parameters" else "left")
    infos = mr.list_models(pattern)
    for info in infos:
        table.add_row(info.name, f"{info.parameters:,}", f"{info.keras_parameters:,}", str(info.channels),
                      info.intensity, "yes" if info.imagenet else "no")
    console.print(table)
    for info in infos:
        console.print(f"{info.name}: {info.description}", highlight=False)


def _train_resume_line(options: dict[str, object]) -> str:
    return (f"the last finished epoch is kept in {options.get('--out')}; the same command resumes training from it: "
            f"{same_command()}")


@app.command("train")
@user_errors(on_interrupt=_train_resume_line)
def train(
    data: Annotated[str, typer.Option("--data", help="phantom | DIR | nih:CSV,IMAGES_DIR | medmnist:FILE.npz")] = "phantom",
    arch: Annotated[str, typer.Option("--arch", help="Zoo architecture (see `medrobust models`).")] = "densenet121",
    weights: Annotated[str, typer.Option("--weights", help="none | imagenet | PATH to backbone weights.")] = "none",
    trainable: Annotated[str, typer.Option("--trainable", help="head | last-block | last:N | all")] = "all",
    two_phase: Annotated[bool, typer.Option("--two-phase", help="Train the head first, then unfreeze.")] = False,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 30,
    size: Annotated[int, typer.Option("--size", min=16, help="Image size the model is trained at.")] = 64,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Default 1e-5 fine-tuning, 1e-3 from scratch.")] = None,
    per_class: Annotated[int, typer.Option("--per-class", help="Phantom images per class.")] = 600,
    class_weighted: Annotated[bool, typer.Option("--class-weighted")] = False,
    lr_schedule: Annotated[str, typer.Option("--lr-schedule", help="plateau (the study's) | cosine")] = "plateau",
    warmup_epochs: Annotated[float, typer.Option("--warmup-epochs", min=0, help="Linear learning-rate warm-up.")] = 0.0,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="The study's augmentation.")] = True,
    noise_sigma: Annotated[float, typer.Option(
        "--noise-sigma", min=0.0, help="Gaussian noise on each training batch ([0, 1] units), as randomized smoothing's "
        "base models are trained (certify them at the same sigma).")] = 0.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
    download: Annotated[bool, typer.Option("--download", help="Allow downloading ImageNet weights.")] = False,
    adversarial: Annotated[Optional[str], typer.Option(
        "--adversarial", help="Adversarial training (Madry et al.): train on this attack's examples, e.g. pgd:eps=4/255."
    )] = None,
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder (model.safetensors + model.json).")] = Path("runs/model"),
) -> None:
    """Train a zoo model with the study's recipe and save a checkpoint."""
    import medrobust as mr

    if adversarial:
        console.print(f"adversarial training on {adversarial} examples (Madry et al. 2018)")
    with CliProgress() as progress:
        trained = mr.train(data, arch, size=size, epochs=epochs, batch_size=batch_size, lr=lr, weights=weights,
                           trainable=trainable, two_phase=two_phase, class_weighted=class_weighted,
                           lr_schedule=lr_schedule, warmup_epochs=warmup_epochs, augment=augment, per_class=per_class,
                           noise_sigma=noise_sigma, seed=seed, device=device, download=download, adversarial=adversarial, out=out,
                           progress=progress)
    if trained.skipped:
        print_skipped(trained.skipped)
    console.print(f"trained on {trained.n_train} images, validated on {trained.n_val}; test accuracy "
                  f"{trained.test_accuracy:.3f} (loss {trained.test_loss:.4f}) on {trained.n_test} after "
                  f"{trained.seconds:.0f}s of training; best epoch {trained.best_epoch}; saved {out}", highlight=False)


@app.command("predict")
@user_errors
def predict(
    model_path: Annotated[Path, typer.Option("--model", help="Checkpoint folder, TorchScript, state dict, .keras or .onnx.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
    classes: ClassesOption = None,
    input_size: InputSizeOption = None,
    channels: ChannelsOption = None,
    intensity: IntensityOption = None,
    window: WindowOption = None,
    output_kind: OutputKindOption = None,
    arch: ArchOption = None,
    trust_pickle: TrustPickleOption = False,
    outputs: OutputsOption = None,
    channels_last: ChannelsLastOption = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
) -> None:
    """Print each image's predicted class and confidence."""
    import medrobust as mr

    model = load_cli_model(model_path, contract_from_options(model_path, classes, input_size, channels, intensity,
                                                          output_kind, arch, trust_pickle, outputs, channels_last, window))
    predictions = mr.predict(model, [str(p) for p in inputs], batch_size=batch_size)
    results = predictions.records()
    if as_json:
        # Plain writes, not rich: a JSON line must never be wrapped or styled, and strict (no NaN).
        for r in results:
            sys.stdout.write(json.dumps(r, allow_nan=False) + "\n")
        sys.stdout.flush()
    else:
        table = Table()
        table.add_column("file", overflow="fold")  # a long path wraps whole instead of being cut with "…"
        table.add_column("class")
        table.add_column("confidence")
        for r in results:
            table.add_row(escape(str(r["file"])), escape(str(r["class"])), f"{r.get('confidence', '')}")
        console.print(table)
    if predictions.skipped:
        print_skipped(predictions.skipped)
        raise typer.Exit(code=3)
