"""The run's metrics (``metrics.json``) and scorecard (``scorecard.json``), assembled from the
stages' outcomes: every number with the settings that produced it, what was skipped, and the
robustness score the scorecard derives."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from medrobust._version import __version__
from medrobust.data.class_names import NOT_ASSESSED_NO_NORMAL
from medrobust.evaluation.context import RunContext
from medrobust.evaluation.results import (
    CertifiedFigure,
    DefenseOutcome,
    DetectorOutcome,
    GuardOutcome,
    ModelChecks,
    RobustBenchFigure,
    RobustnessScore,
    RunMetrics,
    TransferMatrix,
    write_metrics,
)
from medrobust.evaluation.run_data import SKIPPED_FILE
from medrobust.evaluation.run_dir import atomic_write_text, load_json, model_file_sha256
from medrobust.evaluation.scorecard import DEFINITIONS, build_scorecard, definitions, score_grid, write_scorecard
from medrobust.evaluation.stages.attacks import Attacks
from medrobust.evaluation.stages.baseline import Baseline


@dataclass
class Outcomes:
    """What the stages found, for :func:`write_run_metrics`."""

    baseline: Baseline
    attacks: Attacks
    transfer: TransferMatrix | None
    defenses: list[DefenseOutcome]
    detectors: list[DetectorOutcome]
    notes: list[str] = field(default_factory=list)
    seconds_per_image: dict[str, float] = field(default_factory=dict)
    model_checks: ModelChecks | None = None
    robustbench: RobustBenchFigure | None = None
    guard: GuardOutcome | None = None
    certified: CertifiedFigure | None = None


def write_run_metrics(ctx: RunContext, outcomes: Outcomes, seconds_total: float) -> RunMetrics:
    """Write ``skipped.txt``, ``metrics.json`` and ``scorecard.json``; return the metrics."""
    cfg, plan, d = ctx.config, ctx.plan, ctx.config.data
    skipped = sorted(set(ctx.skipped.lines))
    atomic_write_text(ctx.root / SKIPPED_FILE, "".join(f"{line}\n" for line in skipped))
    counts = {k: len(v) for k, v in ctx.parts.items() if k != "test"}
    tested = int(len(outcomes.baseline.labels))
    metrics = RunMetrics(
        name=cfg.name, medrobust_version=__version__, created=datetime.now(UTC).isoformat(timespec="seconds"),
        config=cfg.model_dump(mode="json"),
        data={"source": d.source, "size": d.size, "classes": plan.classes, "data_classes": plan.data_classes,
              "class_map": {dc: plan.classes[j] for dc, j in zip(plan.data_classes, plan.label_map.tolist())},
              "classes_without_images": plan.untested,
              "split": "test" if d.evaluate_only else list(d.split),
              "n": {**counts, "test": tested}, "tested": tested, "attack_images": int(ctx.n),
              "normal_class": plan.classes[plan.normal] if plan.normal is not None else None,
              "dangerous_flips": "assessed" if plan.normal is not None else NOT_ASSESSED_NO_NORMAL,
              "emergency_findings": [plan.classes[i] for i in plan.emergency],
              "skipped": skipped, "notes": outcomes.notes, **stored_grid_record(ctx)},
        model=model_summary(ctx),
        baseline=outcomes.baseline.report, attacks=outcomes.attacks.outcomes, eps_sweep=outcomes.attacks.sweeps,
        transfer=outcomes.transfer, defenses=outcomes.defenses, detectors=outcomes.detectors,
        robustness_score=RobustnessScore(value=None, definition=DEFINITIONS["overall"]),
        seconds_per_image=outcomes.seconds_per_image, seconds_total=seconds_total, model_checks=outcomes.model_checks,
        robustbench=outcomes.robustbench, guard=outcomes.guard, certified=outcomes.certified,
    )
    scorecard = build_scorecard(metrics)
    metrics.robustness_score = RobustnessScore(
        value=None if scorecard.overall is None else round(scorecard.overall, 1),
        definition=f"{DEFINITIONS['overall']} {definitions(score_grid(metrics))['score']}")
    write_metrics(metrics, ctx.root)
    write_scorecard(scorecard, ctx.root)
    return metrics


def model_summary(ctx: RunContext) -> dict:
    """What metrics.json says of the model: its file and SHA-256, contract, size and training."""
    from medrobust.models.classifier import count_parameters

    model = ctx.model
    meta_path = ctx.root / "model" / "model.json"
    meta = load_json(meta_path) if meta_path.is_file() else {}
    load = ctx.config.model.load
    source = Path(load.path) if load is not None else ctx.root / "model"
    return {"file": str(source) if load is not None else "model/ (trained in this run)",
            "sha256": model_file_sha256(source), "differentiable": ctx.differentiable,
            "arch": getattr(model, "arch", None), "parameters": count_parameters(model),
            "contract": model.contract.to_json() if hasattr(model, "contract") else {},
            "training": meta.get("training"), "metrics": meta.get("metrics"),
            "surrogates": [s.name for s in ctx.config.surrogates]}


NOISE_IMAGES = 32
"""Clean images of the attack subset the noise of user data is estimated on."""


def stored_grid_record(ctx: RunContext) -> dict:
    """What metrics.json says of the data's stored grid and its noise: ``grid`` (name, unit, the
    stored values of 0 and 1) and ``noise`` (standard deviation in a homogeneous region, in the
    grid's unit, and how it was measured: the phantoms' generator or manifest, or an estimate on up to
    :data:`NOISE_IMAGES` of the attack subset's clean images). Nothing on 8-bit data: the grid every
    reader assumes when metrics.json names none, so an 8-bit run writes what it wrote before CT."""
    from medrobust.data.noise_estimate import ESTIMATE_METHOD, MANIFEST_METHOD, estimate_noise_std, manifest_noise_std
    from medrobust.data.phantom.ct_dataset import GENERATOR_METHOD
    from medrobust.execution.pixels import stored_grid_of

    grid = ctx.parts["test"].grid
    if grid.unit != "HU":
        return {}  # 8-bit data, the default every reader assumes: metrics.json reads as it did before CT
    record = {"grid": {"name": grid.name, "unit": grid.unit, "low": grid.low, "high": grid.high}}
    std, method = ctx.parts["test"].known_noise_std(), GENERATOR_METHOD
    if std is None:
        std, method = manifest_noise_std(ctx.config.data.source), MANIFEST_METHOD
    if std is None and ctx.n:
        stored = ctx.inputs.take(np.arange(min(ctx.n, NOISE_IMAGES)), ctx.batch_size, "clean")
        # stored integers k are levels above the grid's lowest value: HU = low + k (the estimate
        # once read them as the currency, HU = low + 4095 k, and never found soft tissue)
        std = estimate_noise_std(stored_grid_of(stored).low + stored.astype(np.float64))
        method = ESTIMATE_METHOD if std is not None else "not measured: no soft-tissue region (-100..150 HU) found"
    record["noise"] = {"std": None if std is None else round(float(std), 2), "unit": grid.unit, "method": method}
    return record
