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
from medrobust.evaluation.classification import NOT_ASSESSED_NO_NORMAL

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


def _flips(a) -> str:
    if a.dangerous_flips is None:
        return " (dangerous flips not assessed)"
    flips = sum(f.count for f in a.dangerous_flips)
    if not flips:
        return ""
    normal = a.dangerous_flips[0].predicted_class
    emergencies = sum(f.count for f in a.dangerous_flips if f.emergency)
    return (f" ({flips} finding{'s' if flips != 1 else ''} -> {normal}"
            + (f", {emergencies} missed emergenc{'ies' if emergencies != 1 else 'y'}" if emergencies else "") + ")")


def print_summary(metrics, report_path: Path | None, run_dir: Path | None = None) -> None:
    """The summary table printed at the end of a run."""
    data = metrics.data
    tested = data.get("tested", metrics.baseline.n)
    split = data.get("split")
    table = Table(title=f"medrobust: {metrics.name} ({tested} test images, {data['attack_images']} attacked)")
    table.add_column("what")
    table.add_column("result", justify="right")
    table.add_row("images tested", f"{tested}" + (" (every image: split test)" if split == "test" else
                                                   f" (test split of {sum(data.get('n', {}).values())})"))
    table.add_row("clean accuracy (test set)", _pct(metrics.baseline.accuracy))
    if data.get("classes_without_images"):
        table.add_row("classes without images", ", ".join(data["classes_without_images"]) + " (not assessed)")
    if data.get("normal_class") is None:
        table.add_row("dangerous flips", "not assessed (see below)")
    for a in metrics.attacks:
        table.add_row(f"{a.key}", f"{_pct(a.clean.accuracy)} -> {_pct(a.adversarial.accuracy)}" + _flips(a))
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
    skipped = data.get("skipped") or []
    if skipped:
        where = f" (listed in {run_dir / 'skipped.txt'})" if run_dir is not None else ""
        table.add_row("[bold yellow]files skipped[/bold yellow]",
                      f"[bold yellow]{len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped{where}; "
                      "the result is partial[/bold yellow]")
    for note in data.get("notes") or []:
        table.add_row("note", note)
    table.add_row("run time", f"{metrics.seconds_total / 60:.1f} min")
    console.print(table)
    if data.get("normal_class") is None:
        console.print(NOT_ASSESSED_NO_NORMAL, style="bold yellow", highlight=False, markup=False)
    console.print(metrics.robustness_score.definition, style="dim")
    if run_dir is not None:
        console.print(f"per-image lines: {run_dir / 'log.txt'}", style="dim", highlight=False)
    if report_path is not None:
        console.print(f"report: {report_path}")


def run_experiment(config, restart: bool = False) -> None:
    """Run, report, print the summary; exit status 3 (partial) when files were skipped."""
    from medrobust.evaluation.runner import Runner

    progress = RichProgress()
    with progress.bar:
        metrics = Runner(config, progress=progress, restart=restart).run()
    report_path = None
    try:
        from medrobust.report import build_report
    except ImportError:  # the report room is optional for a bare library install
        log.warning("medrobust.report is not available: metrics.json written, no report.html")
    else:
        report_path = build_report(config.run_dir)
    print_summary(metrics, report_path, config.run_dir)
    if metrics.data.get("skipped"):
        raise typer.Exit(code=3)


@app.command("evaluate")
@user_errors
def evaluate(
    config_path: Annotated[Path, typer.Argument(help="Experiment YAML (see examples/).")],
    name: Annotated[Optional[str], typer.Option("--name", help="Override the run name.")] = None,
    output_dir: Annotated[Optional[str], typer.Option("--output-dir", help="Override the output folder.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda")] = None,
    normal_class: Annotated[Optional[str], typer.Option(
        "--normal-class", help="The class meaning 'nothing found' (found by name when left out).")] = None,
    class_map: Annotated[Optional[list[str]], typer.Option(
        "--class-map", help="FOLDER=CLASS: a data class is this model class (repeatable).")] = None,
    split: Annotated[Optional[str], typer.Option(
        "--split", help="'test' (every image is tested) or train,val,test fractions such as 0.6,0.2,0.2.")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Delete the run folder's results and start afresh.")] = False,
) -> None:
    """Run the experiment in CONFIG.yaml (resumes an interrupted run of the same config)."""
    from medrobust.evaluation.config import load_config

    overrides: dict = {k: v for k, v in {"name": name, "output_dir": output_dir, "device": device}.items() if v}
    data: dict = {}
    if normal_class:
        data["normal_class"] = normal_class
    if class_map:
        data["class_map"] = parse_class_map(class_map)
    if split:
        data["split"] = "test" if split.strip().lower() == "test" else [s.strip() for s in split.split(",")]
    if data:
        overrides["data"] = data
    run_experiment(load_config(config_path, overrides), restart=restart)


def parse_class_map(items: list[str]) -> dict[str, str]:
    """``["NORMAL=Normal", "PNEU=Pneumonia"]`` -> {"NORMAL": "Normal", "PNEU": "Pneumonia"}."""
    out = {}
    for item in items:
        folder, sep, cls = item.partition("=")
        if not sep or not folder.strip() or not cls.strip():
            raise ValueError(f"--class-map {item!r} must look like FOLDER=CLASS (e.g. --class-map NORMAL=Normal)")
        out[folder.strip()] = cls.strip()
    return out
