"""`medrobust models`, `medrobust train`, `medrobust predict`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from medrobust.cli.app import (
    ArchOption,
    ClassesOption,
    InputSizeOption,
    IntensityOption,
    OutputKindOption,
    TrustPickleOption,
    app,
    console,
    err_console,
    load_cli_model,
    progress_bar,
    user_errors,
)

log = logging.getLogger(__name__)


@app.command("models")
@user_errors
def models_list(pattern: Annotated[str, typer.Argument(help="Shell-style filter, e.g. 'resnet*'.")] = "*") -> None:
    """List the model zoo with parameter counts."""
    from medrobust.models.classifier import count_parameters
    from medrobust.models.registry import get_spec, list_models
    from medrobust.models.zoo import build_classifier

    table = Table(title="model zoo (3 classes)")
    for col in ("name", "parameters", "Keras-style count", "channels", "intensity", "ImageNet"):
        table.add_column(col, justify="right" if "count" in col or col == "parameters" else "left")
    descriptions = []
    for name in list_models(pattern):
        spec = get_spec(name)
        model = build_classifier(name, ["a", "b", "c"])
        n = count_parameters(model)
        # Keras counts BatchNorm moving mean/variance as (non-trainable) parameters too
        bn_stats = sum(b.numel() for key, b in model.named_buffers() if key.endswith(("running_mean", "running_var")))
        table.add_row(name, f"{n:,}", f"{n + bn_stats:,}", str(spec.channels), spec.intensity.value,
                      "yes" if spec.imagenet else "no")
        descriptions.append(f"{name}: {spec.description}")
    console.print(table)
    for line in descriptions:
        console.print(line, highlight=False)


@app.command("train")
@user_errors
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
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", help="Wall-clock budget.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
    download: Annotated[bool, typer.Option("--download", help="Allow downloading ImageNet weights.")] = False,
    adversarial: Annotated[Optional[str], typer.Option(
        "--adversarial", help="Adversarial training (Madry et al.): train on this attack's examples, e.g. pgd:eps=4/255."
    )] = None,
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder (model.safetensors + model.json).")] = Path("runs/model"),
) -> None:
    """Train a zoo model with the study's recipe and save a checkpoint."""
    import torch

    from medrobust.cli.os_errors import check_output_folder
    from medrobust.data.sources import open_dataset
    from medrobust.models.checkpoint import save_checkpoint
    from medrobust.models.classifier import count_parameters
    from medrobust.models.device import resolve_device
    from medrobust.models.training import TrainConfig, evaluate_loss, train_classifier
    from medrobust.models.zoo import build_classifier

    check_output_folder(out)  # before training, not after it: a run must not end by failing to save
    dev = resolve_device(device)
    dataset = open_dataset(data, size=size, per_class=per_class, seed=seed)
    parts = dataset.splits()
    missing = {"train", "val", "test"} - set(parts)
    if missing:
        raise ValueError(f"{data}: the data has no {', '.join(sorted(missing))} split; give it train/val/test images")
    loaded = {name: part.load() for name, part in parts.items()}
    # Files skipped while listing (broken links) are on the whole dataset; unreadable ones on each split.
    for part in (dataset, *parts.values()):
        if part.skipped:
            _print_skipped([str(s) for s in part.skipped])
    torch.manual_seed(seed)
    model = build_classifier(arch, dataset.classes, size, weights=weights, download=download)
    console.print(f"{arch}: {count_parameters(model):,} parameters; training on {len(loaded['train'][0])} images, "
                  f"validating on {len(loaded['val'][0])}, device {dev}")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, trainable=trainable, two_phase=two_phase,
                         class_weighted=class_weighted, seed=seed, max_minutes=max_minutes)
    adversary = None
    if adversarial:
        from medrobust.attacks.registry import build_attack

        adversary = build_attack(adversarial)
        console.print(f"adversarial training on {adversarial} examples (Madry et al. 2018)")
    with progress_bar() as bar:
        epoch_task = bar.add_task("epochs", total=epochs)
        batch_task = bar.add_task("batches", total=None)

        def on_batch(done: int, total: int) -> None:
            bar.update(batch_task, completed=done, total=total)

        def on_epoch(record: dict[str, float]) -> None:
            bar.update(epoch_task, advance=1)
            bar.console.print(
                f"epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  acc {record['train_accuracy']:.3f}  "
                f"val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.3f}  lr {record['lr']:.1e}  "
                f"{record['seconds']:.1f}s"
            )

        result = train_classifier(model, loaded["train"][:2], loaded["val"][:2], config, device=dev,
                                  pretrained=weights not in ("none", ""), on_epoch=on_epoch, on_batch=on_batch,
                                  adversary=adversary)
    test_loss, test_acc = evaluate_loss(model, *loaded["test"][:2])
    metrics = {"test_loss": test_loss, "test_accuracy": test_acc, "best_epoch": result.best_epoch,
               "best_val_loss": result.best_val_loss, "train_seconds": round(result.seconds, 1)}
    save_checkpoint(model.cpu(), out, extra={
        "training": {**config.to_json(), "lr": result.lr, "weights": weights, "data": data, "size": size,
                     "adversarial": adversarial},
        "history": result.history, "metrics": metrics,
    })
    console.print(f"test accuracy {test_acc:.3f} (loss {test_loss:.4f}) after {result.seconds:.0f}s of training; "
                  f"best epoch {result.best_epoch}; saved {out}")


@app.command("predict")
@user_errors
def predict(
    model_path: Annotated[Path, typer.Option("--model", help="Checkpoint folder, TorchScript, state dict, .keras or .onnx.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
    classes: ClassesOption = None,
    input_size: InputSizeOption = None,
    intensity: IntensityOption = None,
    output_kind: OutputKindOption = None,
    arch: ArchOption = None,
    trust_pickle: TrustPickleOption = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
) -> None:
    """Print each image's predicted class and confidence."""
    import torch

    from medrobust.data.errors import ImageReadError
    from medrobust.data.io import is_image_file, read_image
    from medrobust.data.record_ids import printable_path, printable_text
    from medrobust.data.resize import resize_image

    model = load_cli_model(model_path, classes, input_size, intensity, output_kind, arch, trust_pickle)
    files: list[Path] = []
    for p in inputs:
        # Image-named links that lead nowhere are kept, so reading them reports them as skipped.
        files.extend(sorted(f for f in p.rglob("*") if (f.is_file() or f.is_symlink()) and is_image_file(f))
                     if p.is_dir() else [p])
    size = model.input_size
    skipped: list[str] = []
    results: list[dict[str, object]] = []
    batch: list[tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        x = torch.stack([t for _, t in batch])
        proba = model.predict_proba(x)
        labels = model.predict(x)
        for (path, _), p, y in zip(batch, proba, labels):
            name = printable_path(path)
            if not torch.isfinite(p).all():
                skipped.append(f"{name}: the model's output for this image is not a finite number (NaN or "
                               "infinite); check the model with a known image")
                continue
            if y.ndim == 0:
                results.append({"file": name, "class": model.classes[int(y)], "confidence": round(float(p[int(y)]), 4)})
            else:
                found = [c for c, flag in zip(model.classes, y.tolist()) if flag]
                results.append({"file": name, "class": "|".join(found) or "none",
                                "probabilities": {c: round(float(v), 4) for c, v in zip(model.classes, p)}})
        batch.clear()

    for path in files:
        try:
            image = read_image(path)
        except ImageReadError as err:
            log.warning("skipping %s", printable_text(str(err)))
            skipped.append(str(err))
            continue
        if size is not None:
            image = resize_image(image, size)
        tensor = torch.from_numpy(image).unsqueeze(0)
        if batch and tensor.shape != batch[0][1].shape:
            flush()
        batch.append((path, tensor))
        if len(batch) >= batch_size:
            flush()
    flush()
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
    if skipped:
        _print_skipped(skipped)
        raise typer.Exit(code=3)


def _print_skipped(skipped: list[str]) -> None:
    """The skipped files, one per line, on stderr: stdout holds only the results."""
    from medrobust.data.record_ids import printable_text

    err_console.print(f"{len(skipped)} file(s) skipped:", highlight=False)
    for line in skipped:
        err_console.print(f"  {printable_text(line)}", markup=False, highlight=False)
