"""The defense stages: each preprocessing defense scored honestly.

* its cost: accuracy of the defended model on clean images;
* non-adaptive: the attacks' images (crafted against the undefended model) through the defense;
* adaptive: a portfolio of attackers who know the defense (exact gradients where it has them,
  BPDA and a smooth JPEG where it has none, EOT over its randomness, restarts, Square, transfer;
  Athalye, Carlini & Wagner 2018), the worst case per image
  (:mod:`medrobust.evaluation.stage_adaptive`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medrobust.components import eps_label
from medrobust.evaluation.batches import StageResult
from medrobust.evaluation.classification import classification_report
from medrobust.evaluation.progress import Progress
from medrobust.evaluation.results import DefenseOutcome, SweepPoint
from medrobust.evaluation.samples import array_key
from medrobust.evaluation.stage_adaptive import AdaptiveSettings, run_portfolio
from medrobust.evaluation.stage_attacks import AttackRun, predict_stage
from medrobust.evaluation.units import ModelRef


def defense_outcome(engine, spec: str, y: np.ndarray, clean_pred: np.ndarray, inputs: StageResult,
                    white_box: list[AttackRun], settings: AdaptiveSettings, undefended_adaptive: AttackRun,
                    stage_root: Path, batch_size: int, seed: int, classes: list[str],
                    progress: Progress | None = None) -> DefenseOutcome:
    """Score one defense, batch by batch (every part resumable): the defended model on the clean
    images (``inputs``), on each white-box attack's images, and under the adaptive portfolio
    (:mod:`medrobust.evaluation.stage_adaptive`), whose worst case is the adaptive accuracy."""
    defended_ref = ModelRef("model", defense=spec, eot_samples=settings.eot_samples)
    folder = stage_root / array_key(spec)
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
        stage = predict_stage(engine, folder / array_key(run.key), defended_ref, run.stage, "x_adv", batch_size, seed, n)
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
    for eps in settings.eps_sweep:
        if abs(eps - settings.eps) < 1e-9:
            continue
        point = run_portfolio(engine, spec, settings, y, pred_clean, defended_ref, inputs, transfer.get(eps, {}),
                              stage_root, batch_size, seed, progress, eps=eps, effort=result.effort)
        sweep.append(SweepPoint(eps=eps, accuracy=point.accuracy))
        masking += [f"at {eps_label(eps)}: {reason}" for reason in point.masking]
    plain_acc = float((undefended_adaptive.pred == y).mean())
    ran = [m for m in result.members if m.accuracy is not None]
    return DefenseOutcome(
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


def _budget(eps: float, grid: list[float]) -> float:
    """``eps`` as the grid's own value when it is one of them (budgets parsed from text may differ in the last bit)."""
    return next((g for g in grid if abs(g - eps) < 1e-9), eps)
