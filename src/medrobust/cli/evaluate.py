"""`medrobust evaluate CONFIG.yaml` and `medrobust demo`: run an experiment, write the report,
print the summary."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
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
    same_command,
    user_errors,
)
from medrobust.cli.option_values import execution_section, parse_class_map
from medrobust.cli.progress import CliProgress

log = logging.getLogger(__name__)


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


def _member_label(m) -> str:
    """An adaptive portfolio member's name and what it ran, in a few words."""
    if m.name == "transfer":
        return f"transfer ({', '.join(m.runs)} from the undefended model, per-image worst case)"
    if m.name == "square":
        return "square (queries to the defended model)"
    return f"{m.name} ({'gradients' if m.gradient_based else 'no gradients'})"


def _eps(eps: float | None, unit: str = "grey levels") -> str:
    """A budget in the data's unit: ``8/255``, or for CT ``4 HU``."""
    from medrobust.report.run_contents import format_eps

    if eps is None:
        return "its budget"
    return format_eps(eps, unit) if unit == "HU" else f"{eps * 255:.3g}/255"


def _scorecard(metrics, run_dir: Path | None):
    """The run's scorecard.json when it is there, else computed from the metrics."""
    from medrobust.evaluation.scorecard import build_scorecard, read_scorecard

    if run_dir is not None and (run_dir / "scorecard.json").is_file():
        return read_scorecard(run_dir)
    return build_scorecard(metrics)


def _certified_rows(table, c) -> None:
    """The certificate's lines of the summary: certified accuracy at each radius, apart from the scores."""
    if c is None:
        return
    at = ", ".join(f"{_pct(p.accuracy)} at {p.radius:g} ({p.grey_levels_per_pixel:.2g} grey levels/pixel)"
                   for p in c.points)
    table.add_row(f"[bold]{c.label}, sigma {c.sigma:g}[/bold]", f"[bold]{at}[/bold] on {c.n_images} images")
    if c.largest_radius is not None and any(p.radius > c.largest_radius for p in c.points):
        table.add_row("  reach", f"{c.draws:,} draws certify no image beyond radius {c.largest_radius:.2f}: the "
                      "accuracy at a larger radius is 0 by the number of draws, not a finding about the model")
    table.add_row("  smoothed classifier", f"clean accuracy {_pct(c.smoothed_clean_accuracy)} (base model "
                  f"{_pct(c.base_clean_accuracy)}), no certificate (CERTIFY abstains) for {_pct(c.abstention_rate)} of "
                  f"the images; the guarantee holds for {c.holds_for}")
    if c.note:
        table.add_row("  note", c.note)


def print_summary(metrics, report_path: Path | None, run_dir: Path | None = None) -> None:
    """The summary table printed at the end of a run."""
    from medrobust.report.run_contents import budget_unit
    from medrobust.report.summary import voxel_budget_sentence

    data = metrics.data
    tested = data.get("tested", metrics.baseline.n)
    split = data.get("split")
    table = Table(title=f"medrobust: {metrics.name} ({tested} test images, {data['attack_images']} attacked)")
    table.add_column("what")
    table.add_column("result", justify="right")
    table.add_row("images tested", f"{tested}" + (" (every image: split test)" if split == "test" else
                                                   f" (test split of {sum(data.get('n', {}).values())})"))
    table.add_row("clean accuracy (test set)", _pct(metrics.baseline.accuracy))
    unit = budget_unit(metrics)
    scorecard = _scorecard(metrics, run_dir)
    budgets = scorecard.grid or [a.eps for a in metrics.attacks if a.eps > 0]
    if unit == "HU" and budgets:  # the largest budget in HU beside the data's noise, as the report says it
        table.add_row("budgets (CT, in HU)", voxel_budget_sentence(max(budgets), metrics))
    if data.get("classes_without_images"):
        table.add_row("classes without images", ", ".join(data["classes_without_images"]) + " (not assessed)")
    if data.get("normal_class") is None:
        table.add_row("dangerous flips", "not assessed (see below)")
    for a in metrics.attacks:
        table.add_row(f"{a.key}", f"{_pct(a.clean.accuracy)} -> {_pct(a.adversarial.accuracy)}" + _flips(a))
        if a.broken_by:
            table.add_row("  broken by", ", ".join(f"{k} {v}" for k, v in a.broken_by.items()))
    for flag in (metrics.model_checks.flags if metrics.model_checks else []):
        table.add_row("[bold red]check[/bold red]", flag)
    attack_keys = {a.key for a in metrics.attacks}
    for d in metrics.defenses:
        table.add_row(f"defense {d.name}: clean cost", f"{d.clean_cost_pp:+.1f} pp")
        for key, acc in d.non_adaptive.items():
            if key in attack_keys:  # the sweeps' other budgets are in the scorecard row below
                table.add_row(f"  {key} through the defense (non-adaptive)", _pct(acc))
        for m in d.adaptive_members:
            if m.name == "transfer" and len(m.runs) == 1 and m.runs[0] in d.non_adaptive:
                continue  # the non-adaptive line above, by another name
            table.add_row(f"  adaptive: {_member_label(m)}", _pct(m.accuracy) if m.accuracy is not None else "not run")
        flag = (" [bold red]possible gradient masking[/bold red]"
                if d.masking_flagged else
                "" if d.gradient_masking_assessed else " (gradient masking not assessed)")
        ran = [m.name for m in d.adaptive_members if m.accuracy is not None]
        members = f" of {len(ran)} ({', '.join(ran)})" if ran else ""
        table.add_row(f"  [bold]adaptive, worst case{members} at {_eps(d.adaptive_eps, unit)}[/bold]",
                      f"[bold]{_pct(d.adaptive_accuracy)}[/bold]{flag}")
    for det in metrics.detectors:
        rates = ", ".join(f"{k}: {_pct(v)}" for k, v in det.detection_rate.items())  # the white-box attacks
        table.add_row(f"detector {det.name}: detection", rates)
        benign = max(det.fpr_benign.values()) if det.fpr_benign else 0.0
        table.add_row(f"detector {det.name}: false alarms", f"clean {_pct(det.fpr_clean)}, benign up to {_pct(benign)}")
    for row in scorecard.rows:
        table.add_row(f"[bold]score: {row.label}[/bold]", f"[bold]{row.score_text}[/bold] (half accuracy at "
                      f"{row.half_accuracy_text})" + (f" [yellow]warning: {row.warning}[/yellow]" if row.warning else ""))
    table.add_row("[bold]robustness score (overall)[/bold]", f"[bold]{scorecard.overall_text}[/bold]")
    if scorecard.grid:
        table.add_row("scored on the grid", ", ".join(_eps(g, unit) for g in scorecard.grid) + " (every row)")
    g = metrics.guard
    if g is not None:
        queried = g.queried_through_defense
        for b in g.budgets:
            attacker = (f"attack images{' and Square through the defense' if queried else ''} (guard-aware attacker "
                        "not run: black box)") if g.not_run else "guard-aware attacker"
            table.add_row(f"[bold]guard {' + '.join([g.defense or 'no defense', *g.detectors])}: {attacker} "
                          f"at {_eps(b.eps, unit)}[/bold]", f"[bold]evasion {_pct(b.evasion_rate)}[/bold], flagged "
                          f"{_pct(b.flagged_rate)}, abstained {_pct(b.abstained_rate)}, accuracy on accepted "
                          f"{b.accuracy_on_accepted_text}")
        table.add_row("  guard: clean cost", f"abstains on {_pct(g.clean.abstained_rate)} of clean images")
    rb = metrics.robustbench
    if rb is not None:
        broken = ", ".join(f"{k} {v}" for k, v in rb.broken_by.items()) or "none"
        table.add_row("[bold]RobustBench: AutoAttack (without FAB-T) at 8/255 L-inf, float images[/bold]",
                      f"[bold]{_pct(rb.clean_accuracy)} -> {_pct(rb.robust_accuracy)}[/bold] on {rb.n} images "
                      f"(broken by: {broken})")
    _certified_rows(table, scorecard.certified)
    for line in scorecard.not_tested:
        table.add_row("not tested", line)
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
        console.print(metrics.data.get("dangerous_flips"), style="bold yellow", highlight=False, markup=False)
    for key in ("score", "overall", "half_accuracy_budget"):
        console.print(scorecard.definitions[key], style="dim", highlight=False, markup=False)
    if run_dir is not None and (run_dir / "statement.html").is_file():
        console.print(f"robustness statement: {run_dir / 'statement.html'}", style="dim", highlight=False)
    if run_dir is not None:
        console.print(f"per-image lines: {run_dir / 'log.txt'}", style="dim", highlight=False)


def run_experiment(config, restart: bool = False, closing: str | None = None, **evaluate_options) -> None:
    """Run (``config``: a configuration, or a preset name with ``evaluate_options`` naming the
    model and images), write the report, print the summary; exit status 3 (partial) when files
    were skipped. The summary ends with the report as a ``file://`` link (a terminal makes it
    clickable) and ``closing``, a sentence for the reader, when given."""
    import medrobust as mr

    with CliProgress() as progress:
        metrics = mr.evaluate(preset=config, progress=progress, restart=restart, **evaluate_options)
    run_dir = Path(metrics.config["output_dir"]) / metrics.name
    report_path = None
    try:
        from medrobust.report import build_report
    except ImportError:  # the report room is optional for a bare library install
        log.warning("medrobust.report is not available: metrics.json written, no report.html")
    else:
        report_path = build_report(run_dir)
    print_summary(metrics, report_path, run_dir)
    console.print(f"to repeat this run: medrobust evaluate {run_dir / 'config.yaml'}", style="dim", highlight=False)
    if report_path is not None:
        console.print(f"report: {Path(report_path).resolve().as_uri()}", highlight=False, soft_wrap=True)
    if closing:
        console.print(closing, highlight=False, markup=False)
    if metrics.data.get("skipped"):
        raise typer.Exit(code=3)


KEPT = "finished batches and training epochs are kept in the run folder"


def resume_line(options: dict[str, object]) -> str:
    """What an interrupted ``evaluate`` (or ``demo``) says: what was kept and the command that
    resumes it (the one typed, without ``--restart``, which would delete what was kept)."""
    return f"{KEPT}; resume with: {same_command(drop=('--restart',))}"


@app.command("evaluate")
@user_errors(on_interrupt=resume_line)
def evaluate(
    config_path: Annotated[Optional[Path], typer.Argument(
        help="Experiment YAML (see examples/), or leave out and give --model and --data.")] = None,
    model_path: Annotated[Optional[Path], typer.Option(
        "--model", help="The model to evaluate (checkpoint, TorchScript, state dict, .keras, .onnx).")] = None,
    data: Annotated[Optional[str], typer.Option(
        "--data", help="Labelled images: DIR of <Class>/ folders | nih:CSV,IMAGES_DIR | medmnist:FILE.npz | "
        "phantom (the built-in synthetic radiographs)")] = None,
    preset: Annotated[str, typer.Option("--preset", help="quick | standard | thorough (see the README).")] = "standard",
    train_data: Annotated[Optional[str], typer.Option(
        "--train-data", help="Other images of the same classes to train a transfer surrogate on (standard, thorough).")]
    = None,
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
    size: Annotated[Optional[int], typer.Option(
        "--size", help="Image size for a model that takes any size (default 224).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Override the run name.")] = None,
    output_dir: Annotated[Optional[str], typer.Option("--output-dir", help="Override the output folder.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda")] = None,
    normal_class: Annotated[Optional[str], typer.Option(
        "--normal-class", help="The class meaning 'nothing found' (found by name when left out).")] = None,
    emergency_findings: Annotated[Optional[str], typer.Option(
        "--emergency-findings", help="Findings whose miss is an emergency, comma-separated (default Pneumothorax).")]
    = None,
    class_map: Annotated[Optional[list[str]], typer.Option(
        "--class-map", help="FOLDER=CLASS: a data class is this model class (repeatable).")] = None,
    split: Annotated[Optional[str], typer.Option(
        "--split", help="'test' (every image is tested) or train,val,test fractions such as 0.6,0.2,0.2.")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Delete the run folder's results and start afresh.")] = False,
    ray: Annotated[Optional[str], typer.Option(
        "--ray", metavar="[ADDRESS]", help="Run the work on Ray: alone (or 'local') a Ray instance on this machine; "
        "'auto' the cluster this machine joined (ray start); ray://HOST:PORT through Ray Client. Needs "
        "medrobust[scale].")] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=1, help="Ray workers (each loads the model once; default one per CPU of the cluster).")] = None,
    robustbench: Annotated[bool, typer.Option(
        "--robustbench", help="Also report the accuracy under AutoAttack at 8/255 L-inf on float images, as "
        "RobustBench measures it (beside published figures; not a scorecard row).")] = False,
    guard: Annotated[bool, typer.Option(
        "--guard", help="Also evaluate the guard (the first defense and the squeeze detector, as `medrobust guard "
        "serve --run` serves them) against an attacker who knows both (Carlini & Wagner 2017); the presets run it "
        "already.")] = False,
    certify: Annotated[bool, typer.Option(
        "--certify", help="Also certify the attacked images by randomized smoothing (Cohen et al. 2019): certified "
        "accuracy at L2 radii 0.1-1.0 for the smoothed classifier, beside the scorecard (n = 1,000 / 10,000 / "
        "100,000 noise draws for quick / standard / thorough, or the file's certify section).")] = False,
    certify_sigma: Annotated[Optional[float], typer.Option(
        "--certify-sigma", min=0.0, help="The certificates' Gaussian noise (standard deviation in [0, 1] image units; "
        "default 0.25): the noise the model was trained under. Implies --certify.")] = None,
) -> None:
    """Evaluate a model: `medrobust evaluate --model FILE --data DIR [--preset quick|standard|thorough]`,
    or run the experiment in CONFIG.yaml. Writes RUN/config.yaml (to repeat the run), metrics.json
    and report.html; an interrupted run of the same configuration resumes."""
    from medrobust.evaluation.config import load_config

    contract = contract_from_options(model_path or config_path, classes, input_size, channels, intensity, output_kind,
                                     arch, trust_pickle, outputs, channels_last, window)
    split_value = None
    findings = [f.strip() for f in emergency_findings.split(",") if f.strip()] if emergency_findings is not None else None
    if split:
        split_value = "test" if split.strip().lower() == "test" else [s.strip() for s in split.split(",")]
    if config_path is not None:
        if model_path is not None or data is not None:
            raise ValueError(f"give either {config_path} or --model/--data, not both (the file names the model and "
                             "data; edit it, or leave it out)")
        if contract.declared():
            flags = ", ".join("--" + name.replace("_", "-") for name in contract.declared())
            raise ValueError(f"{config_path} names the model and its contract (model.load: path, classes, intensity, "
                             f"...): put {flags} there, not on the command line")
        overrides: dict = {k: v for k, v in {"name": name, "output_dir": output_dir, "device": device,
                                             "robustbench": robustbench}.items() if v}
        if guard:
            overrides["guard"] = {}  # the file's own guard section, if it has one, is kept
        if certify or certify_sigma is not None:
            overrides["certify"] = {"sigma": certify_sigma} if certify_sigma is not None else {}
        if ray is not None or workers is not None:
            overrides["execution"] = execution_section(ray, workers)
        section: dict = {}
        if normal_class:
            section["normal_class"] = normal_class
        if findings is not None:
            section["emergency_findings"] = findings
        if class_map:
            section["class_map"] = parse_class_map(class_map)
        if split_value is not None:
            section["split"] = split_value
        if section:
            overrides["data"] = section
        run_experiment(load_config(config_path, overrides), restart=restart)
        return
    if model_path is None or data is None:
        raise ValueError("give a CONFIG.yaml, or --model FILE and --data DIR (a folder with one sub-folder of images "
                         "per class)")
    run_experiment(preset, restart=restart, model=model_path, images=data, name=name, output_dir=output_dir,
                   contract=contract, size=size, normal_class=normal_class, emergency_findings=findings,
                   class_map=parse_class_map(class_map or []) or None, split=split_value, train_data=train_data,
                   device=device, execution=execution_section(ray, workers) if ray is not None or workers else None,
                   robustbench=robustbench or None, guard=guard or None,
                   certify=({"sigma": certify_sigma} if certify_sigma is not None else True) if certify or
                   certify_sigma is not None else None)
