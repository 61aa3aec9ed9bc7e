"""The defense stages: each preprocessing defense scored honestly.

* its cost: accuracy of the defended model on clean images;
* non-adaptive: the attacks' images (crafted against the undefended model) through the defense;
* adaptive: an attacker who knows the defense attacks the defended model, differentiating
  through it exactly where it can, with BPDA (identity backward) where it cannot, and
  averaging over its randomness (EOT) — Athalye, Carlini & Wagner 2018.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from medrobust.components import eps_label
from medrobust.evaluation.classification import classification_report
from medrobust.evaluation.results import DefenseOutcome
from medrobust.evaluation.stage_attacks import AttackRun, run_attack_stage


def gradient_mode(defended: nn.Module, needs_gradients: bool = True) -> str:
    """How the adaptive attacker went through the defense: exact gradients, BPDA, or (a query
    attack) only its outputs; ``+eot(n)`` when it averaged n draws of a randomised defense."""
    defense = defended.defense
    mode = "queries" if not needs_gradients else "exact" if getattr(defense, "differentiable", False) else "bpda"
    draws = int(getattr(defended, "eot_samples", 1))
    return f"{mode}+eot({draws})" if getattr(defense, "randomized", False) and draws > 1 else mode


def defense_outcome(spec: str, model: nn.Module, x: torch.Tensor, y: np.ndarray, clean_pred: np.ndarray,
                    white_box: list[AttackRun], adaptive_attack: str, adaptive_params: dict[str, Any],
                    adaptive_eps: float, eot_samples: int | None, undefended_adaptive: AttackRun,
                    stage_root: Path, batch_size: int, seed: int, device: torch.device, classes: list[str],
                    advance=None) -> tuple[DefenseOutcome, dict[str, np.ndarray]]:
    """Score one defense; returns the outcome and the defended images of the first few samples
    (``clean`` and per attack key) for the report's pictures."""
    from medrobust.defenses.defended import DefendedClassifier
    from medrobust.defenses.registry import build_defense

    defense = build_defense(spec)
    defended = DefendedClassifier(defense, model, eot_samples=eot_samples)
    t0 = time.perf_counter()
    with torch.no_grad():
        defended_clean = defense(x.to(device)).cpu()
    seconds = (time.perf_counter() - t0) / max(1, len(x))
    pred_clean = model.predict(defended_clean).numpy()
    clean_report = classification_report(y, pred_clean, classes)
    base_acc = float((clean_pred == y).mean())
    images: dict[str, np.ndarray] = {"clean": defended_clean[:, 0].numpy()}
    non_adaptive, recovery, reports = {}, {}, {}
    for run in white_box:
        with torch.no_grad():
            cleaned = defense(run.x_adv.to(device)).cpu()
        pred = model.predict(cleaned).numpy()
        reports[run.key] = classification_report(y, pred, classes)
        acc = reports[run.key].accuracy
        non_adaptive[run.key] = acc
        recovery[run.key] = 100.0 * (acc - float((run.pred == y).mean()))
        images[run.key] = cleaned[:, 0].numpy()
    params = {**adaptive_params, "eps": adaptive_eps}
    key = f"{adaptive_attack}@{eps_label(adaptive_eps)} adaptive vs {spec}"
    adaptive = run_attack_stage(stage_root, key, adaptive_attack, params, defended, defended, x, torch.as_tensor(y),
                                batch_size, seed, device, advance)
    adaptive_acc = float((adaptive.pred == y).mean())
    from medrobust.attacks.registry import build_attack

    mode = gradient_mode(defended, bool(getattr(build_attack(adaptive_attack), "needs_gradients", True)))
    plain_acc = float((undefended_adaptive.pred == y).mean())
    outcome = DefenseOutcome(
        name=spec, clean=clean_report, clean_cost_pp=100.0 * (base_acc - clean_report.accuracy),
        non_adaptive=non_adaptive, non_adaptive_recovery_pp=recovery, non_adaptive_reports=reports,
        adaptive_attack=f"{adaptive_attack}@{eps_label(adaptive_eps)} ({mode})",
        adaptive_accuracy=adaptive_acc, adaptive_recovery_pp=100.0 * (adaptive_acc - plain_acc),
        gradient_mode=mode, seconds_per_image=seconds,
    )
    return outcome, images
