"""`medrobust data ...`: write, look at and check datasets."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from medrobust.cli.app import app, console, print_skipped, user_errors
from medrobust.cli.progress import CliProgress

data_app = typer.Typer(help="Datasets: the synthetic chest radiographs and head CTs (phantoms) and real data.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("phantom")
@user_errors
def data_phantom(
    out: Annotated[Path, typer.Option("--out", help="Folder to write <Class>/*.png and manifest.csv into.")],
    per_class: Annotated[int, typer.Option("--per-class", "--n", min=1, help="Images (CT: volumes) per class.")] = 100,
    size: Annotated[Optional[int], typer.Option("--size", min=32, max=512, help="Image size in pixels (32..512; "
                                                "default 128, CT 64).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Generator seed: the same seed gives byte-identical images.")] = 0,
    modality: Annotated[str, typer.Option("--modality", help="xray: chest radiographs (PNG) | ct: head CT in HU "
                                          "(normal, haemorrhage, infarct).")] = "xray",
    volumes: Annotated[bool, typer.Option("--volumes/--slices", help="CT: volumes (one DICOM series folder or NIfTI "
                                          "file each) or single axial slices.")] = True,
    depth: Annotated[int, typer.Option("--depth", min=2, max=256, help="CT volumes: slices per volume.")] = 16,
    fmt: Annotated[str, typer.Option("--format", help="CT: dicom | nifti | both (then OUT/dicom and OUT/nifti).")]
    = "dicom",
) -> None:
    """Write the synthetic chest radiograph dataset as 8-bit grayscale PNGs plus manifest.csv, or
    with --modality ct head CT volumes or slices in HU as DICOM series and/or NIfTI."""
    import medrobust as mr

    total = 3 * per_class
    start = time.perf_counter()
    with CliProgress() as progress:
        manifest = mr.write_phantoms(out, per_class, size, seed, progress=progress, modality=modality.strip().lower(),
                                     depth=depth if volumes else 1, fmt=fmt.strip().lower())
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
    import medrobust as mr

    out.parent.mkdir(parents=True, exist_ok=True)
    mr.phantom_gallery(per_class, size, seed).save(out)
    console.print(f"wrote {out}")


@data_app.command("info")
@user_errors
def data_info(
    spec: Annotated[str, typer.Argument(help="phantom | DIR | nih:CSV,IMAGES_DIR | medmnist:FILE.npz")],
    size: Annotated[Optional[int], typer.Option("--size", help="Resize images to this size.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Read every image and list the unreadable ones.")] = False,
) -> None:
    """Open a data source and print its classes and images per class and split."""
    import medrobust as mr

    images = mr.open_images(spec, size=size)
    console.print(f"{spec}: {len(images)} images, classes {', '.join(images.classes or ['(unlabelled)'])}")
    console.print(images.split_summary(), markup=False, highlight=False)
    if check:
        with CliProgress() as progress, progress.stage("reading", len(images)) as bar:
            images.check(bar.advance)
    if images.skipped:
        print_skipped(images.skipped)
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
