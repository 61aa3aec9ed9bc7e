"""`medrobust report RUN_DIR`: rebuild the figures, scorecard.json, report.html and statement.html from a run
directory alone; `medrobust statement RUN_DIR`: the printable statement; `medrobust compare RUN_A RUN_B ...`:
scorecards side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medrobust.cli.app import app, console, user_errors


@app.command("report")
@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (holds metrics.json).")],
    normal_class: Annotated[Optional[str], typer.Option(
        "--normal-class", help="Re-read the run with this class as 'nothing found' (dangerous flips).")] = None,
    emergency_findings: Annotated[Optional[str], typer.Option(
        "--emergency-findings", help="Re-read the run with these findings (comma-separated) as emergencies.")] = None,
) -> None:
    """Rebuild figures/*.png, scorecard.json, the self-contained report.html and the printable statement.html of a
    finished run, without running any model. With --normal-class or --emergency-findings the run's stored
    per-image results are first re-read with those settings (its model is loaded, nothing is attacked again)."""
    from medrobust.report import build_report

    _check_run_dir(run_dir)
    if normal_class is not None or emergency_findings is not None:
        import medrobust as mr

        config = run_dir / "config.yaml"
        if not config.is_file():
            raise FileNotFoundError(f"{config}: no configuration to re-read the run with; --normal-class and "
                                    "--emergency-findings need the run folder's config.yaml")
        findings = [f.strip() for f in emergency_findings.split(",") if f.strip()] if emergency_findings else None
        mr.evaluate(preset=config, run_dir=run_dir, normal_class=normal_class, emergency_findings=findings)
    path = build_report(run_dir)
    console.print(str(path), markup=False, highlight=False, soft_wrap=True)


@app.command("statement")
@user_errors
def statement(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (holds metrics.json).")],
) -> None:
    """Write the printable one-page robustness statement (RUN/statement.html) of a finished run and print its path.

    It is rebuilt from scorecard.json (written from metrics.json first when the run has none, or an older version)
    and metrics.json; print it to PDF from a browser for a technical file."""
    from medrobust.report.statement import build_statement

    _check_run_dir(run_dir)
    path = build_statement(run_dir)
    console.print(str(path), markup=False, highlight=False, soft_wrap=True)


@app.command("compare")
@user_errors
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="Two or more run directories; the first is the reference the others are compared with.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML page to write.")] = Path("compare.html"),
) -> None:
    """Write the runs' scorecards side by side (an HTML page), marking the accuracies that differ from the first
    run's beyond the test set's noise (their 95% Wilson intervals do not overlap); print the page's path and
    those differences."""
    import medrobust as mr

    result = mr.compare(*run_dirs, out=out)
    for row, measure, run in result.differences():
        ref, other = measure.values[0], measure.values[run]
        assert ref is not None and other is not None
        console.print(f"{row.label}, {measure.name}: {result.runs[run].run_dir.name} {100 * other.value:.1f}% vs "
                      f"{result.runs[0].run_dir.name} {100 * ref.value:.1f}% ({measure.change[run]}, beyond noise)",
                      markup=False, highlight=False, soft_wrap=True)
    for line in result.incomparable():
        console.print(f"not like for like: {line}", style="bold yellow", markup=False, highlight=False, soft_wrap=True)
    if not result.differences():
        where = " where the runs can be compared" if result.incomparable() else ""
        console.print(f"no accuracy differs from the first run's beyond noise{where}", markup=False, highlight=False)
    console.print(str(result.html), markup=False, highlight=False, soft_wrap=True)


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a folder; pass the run directory that holds metrics.json")
