"""`medrobust demo`: the embedded default experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medrobust.cli.app import app, console, user_errors
from medrobust.cli.data import data_gallery, data_phantom


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
