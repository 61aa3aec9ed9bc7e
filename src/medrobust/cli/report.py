"""`medrobust report RUN_DIR`: rebuild the figures and report.html from a run directory alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medrobust.cli.app import app, console, user_errors


@app.command("report")
@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (holds metrics.json).")],
) -> None:
    """Rebuild figures/*.png and the self-contained report.html of a finished run, without running any model."""
    from medrobust.report import build_report

    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a folder; pass the run directory that holds metrics.json")
    path = build_report(run_dir)
    console.print(str(path), markup=False, highlight=False, soft_wrap=True)
