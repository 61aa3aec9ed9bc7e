"""The per-image stage: ``per_image.csv`` (:mod:`medrobust.evaluation.per_image_table`), a view
of the stored stages — every attack run's decisions, the defended model's decisions on its images
and the detectors' flags — rewritten identically by a resumed run."""

from __future__ import annotations

from medrobust.evaluation.context import RunContext
from medrobust.evaluation.per_image_table import PER_IMAGE_FILE, AttackColumns, per_image_csv
from medrobust.evaluation.results import DetectorOutcome
from medrobust.evaluation.run_dir import atomic_write_text
from medrobust.evaluation.stage_keys import defense_folder
from medrobust.evaluation.stages.attacks import Attacks
from medrobust.execution.resumable_stage import finished_summary


def run(ctx: RunContext, attacks: Attacks, detectors: list[DetectorOutcome]) -> None:
    """Write ``per_image.csv``: one row per attacked image and attack run (white-box, sweeps,
    transferred), with each defense's decision and each detector's flag where they were computed.

    Args:
        ctx: the run's context.
        attacks: the attack stage's outcome.
        detectors: the detection stage's outcomes (whose flags are read from their stages).
    """
    names = [d.name for d in detectors]
    benign = {d.name: len(d.fpr_benign) for d in detectors}  # the benign sets each judged (CT has its own)
    judged = [r.key for r in attacks.white]  # the detectors' attack sets, in their stage's order
    flags = {name: finished_summary(ctx.stages / "detection" / name) for name in names}
    columns = []
    for run in [*attacks.white, *attacks.sweep, *attacks.transferred, *attacks.transferred_sweep]:
        defended = {spec: summary["pred"] for spec in ctx.config.defenses if (summary := finished_summary(
            ctx.stages / "defenses" / defense_folder(spec) / run.stage_key.folder)) is not None}
        flagged = {}
        if run.key in judged:
            flagged = {name: f[key] for name, f in flags.items() if f is not None
                       and (key := f"s{1 + benign[name] + judged.index(run.key)}__flags") in f}
        columns.append(AttackColumns(key=run.key, source=run.source, eps=run.eps, pred=run.pred, defended=defended,
                                     flagged=flagged, broken_by=run.stage.summary.get("broken_by")))
    text = per_image_csv(ctx.inputs.summary["ids"], ctx.labels, ctx.clean_pred, ctx.classes, columns,
                         list(ctx.config.defenses), names)
    atomic_write_text(ctx.root / PER_IMAGE_FILE, text)
