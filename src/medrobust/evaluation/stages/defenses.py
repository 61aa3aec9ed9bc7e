"""The defense stage: each preprocessing defense scored honestly.

* its cost: accuracy of the defended model on clean images;
* non-adaptive: the attacks' images (crafted against the undefended model, the sweeps' budgets
  too) through the defense;
* adaptive: a portfolio of attackers who know the defense (exact gradients where it has them,
  BPDA and a smooth JPEG where it has none, EOT over its randomness, restarts, Square, transfer;
  Athalye, Carlini & Wagner 2018), the worst case per image, at every budget of the grid
  (:mod:`medrobust.evaluation.stages.adaptive`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medrobust.evaluation.attack_runs import AttackRun, predict_stage
from medrobust.evaluation.classification import classification_report
from medrobust.evaluation.context import RunContext
from medrobust.evaluation.results import DefenseOutcome, SweepPoint
from medrobust.evaluation.stage_keys import attack_key, defense_folder
from medrobust.evaluation.stages.adaptive import AdaptiveSettings, run_portfolio
from medrobust.evaluation.stages.attacks import Attacks, run_attack
from medrobust.execution.progress import Progress
from medrobust.execution.resumable_stage import StageResult
from medrobust.execution.units import ModelRef
from medrobust.specs.components import eps_label


@dataclass
class Defenses:
    """The defense stage's outcomes, in the configuration's order, and each one's seconds per image."""

    outcomes: list[DefenseOutcome] = field(default_factory=list)
    seconds_per_image: dict[str, float] = field(default_factory=dict)
    query_runs: dict[str, list[AttackRun]] = field(default_factory=dict)  # defense -> its adaptive Square runs, every
    # budget (images crafted by queries to the defended model: the guard stage sends them through the guard)


def run(ctx: RunContext, attacks: Attacks) -> Defenses:
    """Every configured defense: its cost on clean images, the attack stage's images through it
    (non-adaptive) and its adaptive portfolio, each a resumable stage under ``stages/defenses``.

    Args:
        ctx: the run's context.
        attacks: the attack stage's outcome (white-box and sweep runs).

    Returns:
        The :class:`Defenses`: one outcome per defense (none without a defense or with the
        adaptive attacker off) and each defense's seconds per image.
    """
    out = Defenses()
    cfg = ctx.config
    if not cfg.defenses or not cfg.adaptive.enabled:
        return out
    settings = adaptive_settings(ctx, attacks)
    undefended = undefended_reference(ctx, attacks, settings)
    for spec in cfg.defenses:
        t0 = time.perf_counter()
        outcome, out.query_runs[spec] = defense_outcome(ctx.engine, spec, ctx.labels, ctx.clean_pred, ctx.inputs,
                                                        attacks.white + attacks.sweep, settings, undefended,
                                                        ctx.stages / "defenses", ctx.batch_size, ctx.seed, ctx.classes,
                                                        ctx.progress)  # a progress stage per attack run
        out.outcomes.append(outcome)
        out.seconds_per_image[f"defense {spec} (incl. adaptive attack)"] = (time.perf_counter() - t0) / ctx.n
    return out


def adaptive_settings(ctx: RunContext, attacks: Attacks) -> AdaptiveSettings:
    """The configuration's ``adaptive`` section, at the first white-box attack's budget."""
    adaptive = ctx.config.adaptive
    eps = attacks.white[0].eps if attacks.white else 8 / 255
    queries = int(adaptive.params.get("queries", adaptive.square_queries)) if adaptive.attack == "square" \
        else adaptive.square_queries
    return AdaptiveSettings(
        attack=adaptive.attack, params=dict(adaptive.params), eps=eps, portfolio=tuple(adaptive.portfolio),
        restarts=adaptive.restarts, max_steps=adaptive.max_steps, eot_samples=adaptive.eot_samples,
        max_eot_samples=adaptive.max_eot_samples, square_queries=queries, masking_eps=adaptive.masking_eps,
        differentiable_model=ctx.differentiable, budget_unit=ctx.parts["test"].grid.unit,
        eps_sweep=tuple(adaptive.eps_sweep))


def undefended_reference(ctx: RunContext, attacks: Attacks, settings: AdaptiveSettings) -> AttackRun:
    """The adaptive attack on the undefended model at its budget (what a defense's adaptive
    figure is compared with): a white-box run of the attack stage, or run here."""
    key = attack_key(settings.attack, settings.eps)
    plain = next((r for r in attacks.white if r.key == key.label), None)
    if plain is not None:
        return plain
    params = {**settings.params, "seed": ctx.seed, "eps": settings.eps}
    return run_attack(ctx, key, settings.attack, params, f"{key} (undefended reference)", allow_large_eps=True)


def defense_outcome(engine, spec: str, y: np.ndarray, clean_pred: np.ndarray, inputs: StageResult,
                    white_box: list[AttackRun], settings: AdaptiveSettings, undefended_adaptive: AttackRun,
                    stage_root: Path, batch_size: int, seed: int, classes: list[str],
                    progress: Progress | None = None) -> tuple[DefenseOutcome, list[AttackRun]]:
    """Score one defense, batch by batch (every part resumable): the defended model on the clean
    images (``inputs``), on each white-box attack's images, and under the adaptive portfolio
    (:mod:`medrobust.evaluation.stages.adaptive`), whose worst case is the adaptive accuracy.
    Returns the outcome and the portfolio's Square runs at every budget (none without Square)."""
    defended_ref = ModelRef("model", defense=spec, eot_samples=settings.eot_samples)
    folder = stage_root / defense_folder(spec)
    n = len(y)
    clean_stage = predict_stage(engine, folder / "clean", defended_ref, inputs, "clean", batch_size, seed, n)
    pred_clean = clean_stage.summary["pred"]
    seconds = float(clean_stage.summary["seconds"].sum()) / max(1, n)
    clean_report = classification_report(y, pred_clean, classes)
    base_acc = float((clean_pred == y).mean())
    non_adaptive, non_adaptive_eps, recovery, reports = {}, {}, {}, {}
    transfer: dict[float, dict[str, np.ndarray]] = {}  # budget -> {attack key: defended decisions}
    white_keys = {r.key for r in white_box}
    crafted = [*white_box, *([] if undefended_adaptive.key in white_keys else [undefended_adaptive])]
    for run in crafted:
        stage = predict_stage(engine, folder / run.stage_key.folder, defended_ref, run.stage, "x_adv", batch_size, seed,
                              n)
        pred = stage.summary["pred"]
        transfer.setdefault(_budget(run.eps, [settings.eps, *settings.eps_sweep]), {})[run.key] = pred
        if run.key not in white_keys:
            continue
        reports[run.key] = classification_report(y, pred, classes)
        acc = reports[run.key].accuracy
        non_adaptive[run.key] = acc
        non_adaptive_eps[run.key] = run.eps
        recovery[run.key] = 100.0 * (acc - float((run.pred == y).mean()))
    result = run_portfolio(engine, spec, settings, y, pred_clean, defended_ref, inputs,
                           transfer.get(settings.eps, {}), stage_root, batch_size, seed, progress)
    sweep = [SweepPoint(eps=settings.eps, accuracy=result.accuracy)]
    masking = list(result.masking)
    query_runs = list(result.query_runs)
    for eps in settings.eps_sweep:
        if abs(eps - settings.eps) < 1e-9:
            continue
        point = run_portfolio(engine, spec, settings, y, pred_clean, defended_ref, inputs, transfer.get(eps, {}),
                              stage_root, batch_size, seed, progress, eps=eps, effort=result.effort)
        sweep.append(SweepPoint(eps=eps, accuracy=point.accuracy))
        masking += [f"at {eps_label(eps)}: {reason}" for reason in point.masking]
        query_runs += point.query_runs
    plain_acc = float((undefended_adaptive.pred == y).mean())
    ran = [m for m in result.members if m.accuracy is not None]
    outcome = DefenseOutcome(
        name=spec, clean=clean_report, clean_cost_pp=100.0 * (base_acc - clean_report.accuracy),
        non_adaptive=non_adaptive, non_adaptive_eps=non_adaptive_eps, non_adaptive_recovery_pp=recovery,
        non_adaptive_reports=reports, adaptive_sweep=sorted(sweep, key=lambda p: p.eps),
        adaptive_attack=f"worst case of {len(ran)} adaptive attack{'s' if len(ran) != 1 else ''} at "
                        f"{eps_label(settings.eps)} ({', '.join(m.name for m in ran)})",
        adaptive_accuracy=result.accuracy, adaptive_recovery_pp=100.0 * (result.accuracy - plain_acc),
        gradient_mode=result.gradient_mode, seconds_per_image=seconds, adaptive_eps=settings.eps,
        adaptive_members=result.members, adaptive_checks=result.checks,
        masking_eps=settings.masking_eps if result.masking_eps_accuracy is not None else None,
        masking_eps_accuracy=result.masking_eps_accuracy, gradient_masking=masking,
        gradient_masking_assessed=result.masking_assessed,
    )
    return outcome, query_runs


def _budget(eps: float, grid: list[float]) -> float:
    """``eps`` as the grid's own value when it is one of them (budgets parsed from text may differ in the last bit)."""
    return next((g for g in grid if abs(g - eps) < 1e-9), eps)
