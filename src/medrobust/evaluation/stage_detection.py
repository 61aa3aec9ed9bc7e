"""The detection stage: both detectors on the same clean, attacked and benign-changed images.

Negatives are the clean attack-subset images *and* their benign changes (JPEG q90 re-encode,
re-windowing, resize round trip, 1-grey-level noise) — what a real pipeline feeds a detector
— so the ROC and the false positive rates are the honest ones. Positives are each white-box
attack's images. The reference (study) detector compares every candidate with its original;
the squeeze detector is calibrated on clean validation images to its target FPR and never
sees the original.

A calibrated detector never scores an image it was calibrated on. When the run has no images
besides the test set (``data.split: test``), the squeeze detector is cross-fitted: the clean
images are cut into k folds, and each fold's images (clean, their benign changes, their
attacked versions) are judged with a threshold calibrated on the other k - 1 folds (Chernozhukov
et al.'s cross-fitting; the same idea as a k-fold cross-validated threshold).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from medrobust.detection.base import DetectionResult
from medrobust.evaluation.results import DetectorOutcome
from medrobust.evaluation.stage_attacks import AttackRun

MAX_LOG_LINES = 12


def _roc(clean_scores: np.ndarray, attacked: np.ndarray) -> tuple[float, dict[str, list[float]]]:
    from medrobust.detection.metrics import roc_auc, roc_curve_points

    curve = roc_curve_points(clean_scores, attacked)
    return roc_auc(clean_scores, attacked), {"fpr": curve.fpr.tolist(), "tpr": curve.tpr.tolist()}


def cross_fit_folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """``min(k, n)`` disjoint folds covering ``range(n)``, shuffled with ``seed``, sizes within one."""
    if n < 2:
        raise ValueError(f"cross-fitting needs at least 2 clean images, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, min(k, n))]


class CrossFit:
    """Calibrate-on-the-others: ``calibrate(indices)`` sets the detector's threshold from the clean
    images at ``indices``; ``folds`` are judged one at a time with the other folds' threshold."""

    def __init__(self, folds: Sequence[np.ndarray], calibrate: Callable[[np.ndarray], float]) -> None:
        self.folds = list(folds)
        self.calibrate = calibrate
        self.thresholds: list[float] = []


def _detect(detector, model: nn.Module, images: torch.Tensor, ref: torch.Tensor | None, ids: list[str],
            cross_fit: CrossFit | None) -> DetectionResult:
    """``detector.detect`` over all images, or fold by fold with each fold's own threshold."""
    if cross_fit is None:
        return detector.detect(model, images, reference=ref, names=ids)
    n = len(images)
    flags, scores = np.zeros(n, dtype=bool), np.zeros(n)
    reasons: list[list[str]] = [[] for _ in range(n)]
    lines: list[str] = [""] * n
    thresholds = []
    all_idx = np.arange(n)
    for fold in cross_fit.folds:
        thresholds.append(cross_fit.calibrate(np.setdiff1d(all_idx, fold)))
        part = detector.detect(model, images[fold], reference=None if ref is None else ref[fold],
                               names=[ids[i] for i in fold])
        flags[fold], scores[fold] = part.flags, part.scores
        for j, i in enumerate(fold):
            reasons[i] = part.reasons[j]
            lines[i] = part.details.get("line", [""] * len(fold))[j]
    cross_fit.thresholds = thresholds
    return DetectionResult(flags=flags, scores=scores, reasons=reasons, details={"line": lines}, names=list(ids),
                           detector=getattr(detector, "name", ""), threshold=float(np.mean(thresholds)))


def detector_outcome(name: str, detector, model: nn.Module, x: torch.Tensor, benign: dict[str, torch.Tensor],
                     attacks: list[AttackRun], ids: list[str], needs_reference: bool,
                     cross_fit: CrossFit | None = None, calibration: str = "") -> DetectorOutcome:
    """Run one fitted detector (or, with ``cross_fit``, one calibrated fold by fold) over clean,
    benign and attacked images; ``calibration`` says how it was calibrated, for the report."""
    ref = x if needs_reference else None
    t0 = time.perf_counter()
    clean = _detect(detector, model, x, ref, ids, cross_fit)
    latency = (time.perf_counter() - t0) / max(1, len(x))
    benign_results = {k: _detect(detector, model, v, ref, ids, cross_fit) for k, v in benign.items()}
    negatives = np.concatenate([clean.scores, *(r.scores for r in benign_results.values())])
    rates, aucs, rocs, reasons = {}, {}, {}, {}
    lines: list[str] = []
    for run in attacks:
        result = _detect(detector, model, run.x_adv, ref, ids, cross_fit)
        rates[run.key] = float(result.flags.mean())
        aucs[run.key], rocs[run.key] = _roc(negatives, result.scores)
        reasons[run.key] = result.reason_counts()
        if not lines:
            lines = list(result.details.get("line", []))[:MAX_LOG_LINES]
    threshold = {"score": float(clean.threshold) if clean.threshold is not None else 1.0}
    if hasattr(detector, "describe"):
        threshold.update({k: float(v) for k, v in detector.describe().items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if cross_fit is not None:
        threshold.update({"score": float(np.mean(cross_fit.thresholds)), "score_min": float(min(cross_fit.thresholds)),
                          "score_max": float(max(cross_fit.thresholds)), "folds": float(len(cross_fit.folds))})
    return DetectorOutcome(
        name=name, threshold=threshold, detection_rate=rates, fpr_clean=float(clean.flags.mean()),
        fpr_benign={k: float(r.flags.mean()) for k, r in benign_results.items()}, roc_auc=aucs, roc=rocs,
        reasons=reasons, latency_ms_per_image=1000.0 * latency, log_lines=lines, calibration=calibration,
    )
