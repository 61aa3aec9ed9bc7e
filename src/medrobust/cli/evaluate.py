"""`medrobust evaluate CONFIG.yaml` and `medrobust demo`: run an experiment, write the report,
print the summary."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from medrobust.cli.app import app, console, progress_bar, user_errors

log = logging.getLogger(__name__)


class RichProgress:
    """The runner's progress protocol as rich progress bars: one bar per stage, with ETA."""

    def __init__(self) -> None:
        self.bar = progress_bar()

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator["RichProgress._Stage"]:
        task = self.bar.add_task(name, total=total)
        yield RichProgress._Stage(self.bar, task)
        self.bar.update(task, completed=total)

    class _Stage:
        def __init__(self, bar, task) -> None:
            self.bar, self.task = bar, task

        def advance(self, n: int = 1) -> None:
            self.bar.advance(self.task, n)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def print_summary(metrics, report_path: Path | None) -> None:
    """The summary table printed at the end of a run."""
    table = Table(title=f"medrobust: {metrics.name} ({metrics.data['attack_images']} attacked test images)")
    table.add_column("what")
    table.add_column("result", justify="right")
    table.add_row("clean accuracy (test set)", _pct(metrics.baseline.accuracy))
    for a in metrics.attacks:
        flips = sum(f.count for f in a.dangerous_flips)
        table.add_row(f"{a.key}", f"{_pct(a.clean.accuracy)} -> {_pct(a.adversarial.accuracy)}"
                      + (f" ({flips} finding{'s' if flips != 1 else ''} -> Normal)" if flips else ""))
    for d in metrics.defenses:
        table.add_row(f"defense {d.name}: clean cost", f"{d.clean_cost_pp:+.1f} pp")
        for key, acc in d.non_adaptive.items():
            table.add_row(f"  {key} through the defense (non-adaptive)", _pct(acc))
        table.add_row(f"  {d.adaptive_attack} adaptive", _pct(d.adaptive_accuracy))
    for det in metrics.detectors:
        rates = ", ".join(f"{k}: {_pct(v)}" for k, v in det.detection_rate.items() if " from " not in k)
        table.add_row(f"detector {det.name}: detection", rates)
        benign = max(det.fpr_benign.values()) if det.fpr_benign else 0.0
        table.add_row(f"detector {det.name}: false alarms", f"clean {_pct(det.fpr_clean)}, benign up to {_pct(benign)}")
    table.add_row("robustness score", f"{metrics.robustness_score.value:.0f} / 100")
    table.add_row("run time", f"{metrics.seconds_total / 60:.1f} min")
    console.print(table)
    console.print(metrics.robustness_score.definition, style="dim")
    if report_path is not None:
        console.print(f"report: {report_path}")


def run_experiment(config) -> None:
    from medrobust.evaluation.runner import Runner

    progress = RichProgress()
    with progress.bar:
        metrics = Runner(config, progress=progress).run()
    report_path = None
    try:
        from medrobust.report import build_report
    except ImportError:  # the report room is optional for a bare library install
        log.warning("medrobust.report is not available: metrics.json written, no report.html")
    else:
        report_path = build_report(config.run_dir)
    print_summary(metrics, report_path)


@app.command("evaluate")
@user_errors
def evaluate(
    config_path: Annotated[Path, typer.Argument(help="Experiment YAML (see examples/).")],
    name: Annotated[Optional[str], typer.Option("--name", help="Override the run name.")] = None,
    output_dir: Annotated[Optional[str], typer.Option("--output-dir", help="Override the output folder.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda")] = None,
) -> None:
    """Run the experiment in CONFIG.yaml (resumes an interrupted run of the same config)."""
    from medrobust.evaluation.config import load_config

    overrides = {k: v for k, v in {"name": name, "output_dir": output_dir, "device": device}.items() if v}
    run_experiment(load_config(config_path, overrides))
