"""The detection stage: both detectors on the same clean, attacked and benign-changed images.

Negatives are the clean attack-subset images *and* their benign changes (JPEG q90 re-encode,
re-windowing, resize round trip, 1-grey-level noise) — what a real pipeline feeds a detector
— so the ROC and the false positive rates are the honest ones. Positives are each white-box
attack's images. The reference (study) detector compares every candidate with its original;
the squeeze detector is calibrated on clean validation images to its target FPR and never
sees the original.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn

from medrobust.evaluation.results import DetectorOutcome
from medrobust.evaluation.stage_attacks import AttackRun

MAX_LOG_LINES = 12


def _roc(clean_scores: np.ndarray, attacked: np.ndarray) -> tuple[float, dict[str, list[float]]]:
    from medrobust.detection.metrics import roc_auc, roc_curve_points

    curve = roc_curve_points(clean_scores, attacked)
    return roc_auc(clean_scores, attacked), {"fpr": curve.fpr.tolist(), "tpr": curve.tpr.tolist()}


def detector_outcome(name: str, detector, model: nn.Module, x: torch.Tensor, benign: dict[str, torch.Tensor],
                     attacks: list[AttackRun], ids: list[str], needs_reference: bool) -> DetectorOutcome:
    """Run one fitted detector over clean, benign and attacked images."""
    ref = x if needs_reference else None
    t0 = time.perf_counter()
    clean = detector.detect(model, x, reference=ref, names=ids)
    latency = (time.perf_counter() - t0) / max(1, len(x))
    benign_results = {k: detector.detect(model, v, reference=ref, names=ids) for k, v in benign.items()}
    negatives = np.concatenate([clean.scores, *(r.scores for r in benign_results.values())])
    rates, aucs, rocs, reasons = {}, {}, {}, {}
    lines: list[str] = []
    for run in attacks:
        result = detector.detect(model, run.x_adv, reference=ref, names=ids)
        rates[run.key] = float(result.flags.mean())
        aucs[run.key], rocs[run.key] = _roc(negatives, result.scores)
        reasons[run.key] = result.reason_counts()
        if not lines:
            lines = list(result.details.get("line", []))[:MAX_LOG_LINES]
    threshold = {"score": float(clean.threshold) if clean.threshold is not None else 1.0}
    if hasattr(detector, "describe"):
        threshold.update({k: float(v) for k, v in detector.describe().items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return DetectorOutcome(
        name=name, threshold=threshold, detection_rate=rates, fpr_clean=float(clean.flags.mean()),
        fpr_benign={k: float(r.flags.mean()) for k, r in benign_results.items()}, roc_auc=aucs, roc=rocs,
        reasons=reasons, latency_ms_per_image=1000.0 * latency, log_lines=lines,
    )
