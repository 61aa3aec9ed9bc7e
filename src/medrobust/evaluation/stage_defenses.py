"""The defense stages: each preprocessing defense scored honestly.

* its cost: accuracy of the defended model on clean images;
* non-adaptive: the attacks' images (crafted against the undefended model) through the defense;
* adaptive: an attacker who knows the defense attacks the defended model, differentiating
  through it exactly where it can, with BPDA (identity backward) where it cannot, and
  averaging over its randomness (EOT) — Athalye, Carlini & Wagner 2018.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from medrobust.components import eps_label
from medrobust.evaluation.batches import StageResult
from medrobust.evaluation.classification import classification_report
from medrobust.evaluation.results import DefenseOutcome
from medrobust.evaluation.samples import array_key
from medrobust.evaluation.stage_attacks import AttackRun, predict_stage, run_attack_stage
from medrobust.evaluation.units import ModelRef


def gradient_mode(defended: nn.Module, needs_gradients: bool = True) -> str:
    """How the adaptive attacker went through the defense: exact gradients, BPDA, or (a query
    attack) only its outputs; ``+eot(n)`` when it averaged n draws of a randomised defense."""
    return defense_gradient_mode(defended.defense, int(getattr(defended, "eot_samples", 1)), needs_gradients)


def defense_gradient_mode(defense, draws: int, needs_gradients: bool = True) -> str:
    """:func:`gradient_mode` from the defense and the number of EOT draws."""
    mode = "queries" if not needs_gradients else "exact" if getattr(defense, "differentiable", False) else "bpda"
    return f"{mode}+eot({draws})" if getattr(defense, "randomized", False) and draws > 1 else mode


def defense_outcome(engine, spec: str, y: np.ndarray, clean_pred: np.ndarray, inputs: StageResult,
                    white_box: list[AttackRun], adaptive_attack: str, adaptive_params: dict[str, Any],
                    adaptive_eps: float, eot_samples: int | None, undefended_adaptive: AttackRun,
                    stage_root: Path, batch_size: int, seed: int, classes: list[str],
                    advance=None) -> DefenseOutcome:
    """Score one defense, batch by batch (every part resumable): the defended model on the clean
    images (``inputs``), on each white-box attack's images, and under the adaptive attack."""
    from medrobust.attacks.registry import build_attack
    from medrobust.defenses.defended import DEFAULT_EOT_SAMPLES
    from medrobust.defenses.registry import build_defense

    defended_ref = ModelRef("model", defense=spec, eot_samples=eot_samples)
    folder = stage_root / array_key(spec)
    n = len(y)
    clean_stage = predict_stage(engine, folder / "clean", defended_ref, inputs, "clean", batch_size, seed, n)
    pred_clean = clean_stage.summary["pred"]
    seconds = float(clean_stage.summary["seconds"].sum()) / max(1, n)
    clean_report = classification_report(y, pred_clean, classes)
    base_acc = float((clean_pred == y).mean())
    non_adaptive, recovery, reports = {}, {}, {}
    for run in white_box:
        stage = predict_stage(engine, folder / array_key(run.key), defended_ref, run.stage, "x_adv", batch_size, seed, n)
        pred = stage.summary["pred"]
        reports[run.key] = classification_report(y, pred, classes)
        acc = reports[run.key].accuracy
        non_adaptive[run.key] = acc
        recovery[run.key] = 100.0 * (acc - float((run.pred == y).mean()))
    params = {**adaptive_params, "eps": adaptive_eps}
    key = f"{adaptive_attack}@{eps_label(adaptive_eps)} adaptive vs {spec}"
    adaptive = run_attack_stage(engine, stage_root, key, adaptive_attack, params, defended_ref, defended_ref, inputs,
                                batch_size, seed, advance, source=f"adaptive vs {spec}")
    adaptive_acc = float((adaptive.pred == y).mean())
    defense = build_defense(spec)
    draws = int(eot_samples) if eot_samples is not None else DEFAULT_EOT_SAMPLES if defense.randomized else 1
    mode = defense_gradient_mode(defense, draws, bool(getattr(build_attack(adaptive_attack), "needs_gradients", True)))
    plain_acc = float((undefended_adaptive.pred == y).mean())
    return DefenseOutcome(
        name=spec, clean=clean_report, clean_cost_pp=100.0 * (base_acc - clean_report.accuracy),
        non_adaptive=non_adaptive, non_adaptive_recovery_pp=recovery, non_adaptive_reports=reports,
        adaptive_attack=f"{adaptive_attack}@{eps_label(adaptive_eps)} ({mode})",
        adaptive_accuracy=adaptive_acc, adaptive_recovery_pp=100.0 * (adaptive_acc - plain_acc),
        gradient_mode=mode, seconds_per_image=seconds,
    )
