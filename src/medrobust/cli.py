"""The ``medrobust`` command. Thin: parse arguments, call the library, print."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from medrobust import __version__

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="medrobust",
    help="How far can a medical image classifier be fooled, what do defenses win back, and can attacks be detected.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Datasets: the synthetic chest radiographs (phantoms) and real data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(soft_wrap=True)


def progress_bar() -> Progress:
    """A progress bar with count, elapsed time and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, RuntimeError)


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn an error meant for the user (a bad path, value or file) into one clear line and
    exit status 2, instead of a traceback; ``--verbose`` still logs the traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except USER_ERRORS as err:
            logging.getLogger("medrobust").debug("traceback", exc_info=True)
            console.print(f"[bold red]error:[/bold red] {err}", highlight=False)
            raise typer.Exit(code=2) from None

    return wrapper


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"medrobust {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, show_time=False)],
        force=True,
    )


@data_app.command("phantom")
@user_errors
def data_phantom(
    out: Annotated[Path, typer.Option("--out", help="Folder to write <Class>/*.png and manifest.csv into.")],
    per_class: Annotated[int, typer.Option("--per-class", min=1, help="Images per class.")] = 100,
    size: Annotated[int, typer.Option("--size", min=32, max=512, help="Image size in pixels (32..512).")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Generator seed: the same seed gives byte-identical images.")] = 0,
) -> None:
    """Write the synthetic chest radiograph dataset as 8-bit grayscale PNGs plus manifest.csv."""
    from medrobust.data.phantom.export import write_phantom_dataset

    total = 3 * per_class
    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("phantoms", total=total)
        manifest = write_phantom_dataset(out, per_class, size, seed, progress=lambda n: bar.update(task, completed=n))
    elapsed = time.perf_counter() - start
    _print_manifest_counts(manifest)
    console.print(f"wrote {total} images ({total / elapsed:.0f} images/s) and {manifest}")


@data_app.command("gallery")
@user_errors
def data_gallery(
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("phantom-gallery.png"),
    per_class: Annotated[int, typer.Option("--per-class", min=1, max=20)] = 6,
    size: Annotated[int, typer.Option("--size", min=32, max=512)] = 192,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Write a PNG grid of example phantoms, one row per class."""
    from medrobust.data.phantom.export import phantom_gallery

    out.parent.mkdir(parents=True, exist_ok=True)
    phantom_gallery(per_class, size, seed).save(out)
    console.print(f"wrote {out}")


@data_app.command("info")
@user_errors
def data_info(
    spec: Annotated[str, typer.Argument(help="phantom | DIR | nih:CSV,IMAGES_DIR | medmnist:FILE.npz")],
    size: Annotated[Optional[int], typer.Option("--size", help="Resize images to this size.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Read every image and list the unreadable ones.")] = False,
) -> None:
    """Open a data source and print its classes and images per class and split."""
    from medrobust.data.sources import open_dataset
    from medrobust.data.splits import dataset_split_summary

    dataset = open_dataset(spec, size=size)
    console.print(f"{spec}: {len(dataset)} images, classes {', '.join(dataset.classes)}")
    console.print(dataset_split_summary(dataset), markup=False, highlight=False)
    if check:
        with progress_bar() as bar:
            task = bar.add_task("reading", total=len(dataset))
            for _ in dataset.iter_valid():
                bar.advance(task)
    if dataset.skipped:
        console.print(dataset.skipped_summary(), markup=False, highlight=False)
        raise typer.Exit(code=3)


def _print_manifest_counts(manifest: Path) -> None:
    import csv
    from collections import Counter

    with open(manifest, newline="") as fh:
        counts = Counter((row["label"], row["split"]) for row in csv.DictReader(fh))
    labels = sorted({k[0] for k in counts})
    splits = [s for s in ("train", "val", "test") if any(k[1] == s for k in counts)]
    table = Table(title="images per class and split")
    table.add_column("class")
    for s in splits:
        table.add_column(s, justify="right")
    for lab in labels:
        table.add_row(lab, *(str(counts[(lab, s)]) for s in splits))
    console.print(table)


@app.command("demo")
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/demo"),
    quick: Annotated[bool, typer.Option("--quick", help="A smaller, faster run.")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """The embedded default experiment on synthetic chest radiographs.

    For now this runs the data stage: it writes the phantom dataset and a gallery into the run
    directory. Training, attacks, defenses, detection and the report join as they land.
    """
    per_class = 60 if quick else 300
    data_phantom(out=out / "data", per_class=per_class, size=64, seed=seed)
    data_gallery(out=out / "phantom-gallery.png", per_class=6, size=192, seed=seed)
    console.print(
        "[bold]still to come[/bold] in `medrobust demo`: DenseNet121 training, SIA / PGD / MI-FGSM attacks, "
        "the JPEG+TV defense, both detectors and report.html."
    )
