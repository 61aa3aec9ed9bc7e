"""The detection stage: both detectors (each when configured) on the same clean, attacked and
benign-changed images.

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

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medrobust.evaluation.attack_runs import AttackRun
from medrobust.evaluation.context import RunContext
from medrobust.evaluation.results import DetectorOutcome
from medrobust.evaluation.run_data import first_readable
from medrobust.evaluation.run_dir import cached_json
from medrobust.evaluation.stages.attacks import Attacks
from medrobust.execution.detect_units import DetectUnit, ScoreUnit, benign_names_of
from medrobust.execution.resumable_stage import StageResult, run_stage

log = logging.getLogger(__name__)

MAX_LOG_LINES = 12


def run(ctx: RunContext, attacks: Attacks) -> list[DetectorOutcome]:
    """Each configured detector on the clean, benign-changed and white-box attacked images (see
    the module docstring). Each detector's outcome is kept as ``stages/detection-NAME.json``
    once computed, and read back from there on a resumed run.

    Args:
        ctx: the run's context.
        attacks: the attack stage's outcome (its white-box runs are the positives).

    Returns:
        One outcome per configured detector (reference first); none without a white-box attack.
    """
    cfg = ctx.config.detectors
    white = attacks.white
    if not white or not (cfg.runs_reference or cfg.runs_squeeze):
        return []
    out = []
    if cfg.runs_reference:
        out.append(cached_json(ctx.stages / "detection-reference.json", DetectorOutcome,
                               lambda: reference_outcome(ctx, white)))
    if cfg.runs_squeeze:
        out.append(cached_json(ctx.stages / "detection-squeeze.json", DetectorOutcome,
                               lambda: squeeze_outcome(ctx, white)))
    return out


def reference_outcome(ctx: RunContext, white: list[AttackRun]) -> DetectorOutcome:
    """The study's detector, comparing each image with its original (fixed thresholds)."""
    from medrobust.detection.reference import ReferenceDetector

    ref = ctx.config.detectors.reference
    assert ref is not None
    det = ReferenceDetector(ref.ssim_threshold, ref.confidence_drop, ref.mean_abs_threshold)
    with ctx.progress.stage("detector reference", ctx.n) as bar:
        stage = detection_stage(ctx.engine, ctx.stages / "detection" / "reference", det, True, ctx.inputs, white,
                                ctx.batch_size, ctx.seed, advance=bar.advance)
    return detector_outcome("reference", det, stage, white, benign=benign_names(ctx.inputs))


def squeeze_outcome(ctx: RunContext, white: list[AttackRun]) -> DetectorOutcome:
    """The squeeze detector, calibrated to its target false-alarm rate on clean images none of
    which it judges (:func:`squeeze_calibration`)."""
    from medrobust.detection.squeeze import SqueezeDetector

    sq = ctx.config.detectors.squeeze
    assert sq is not None
    det = SqueezeDetector(sq.squeezers, target_fpr=sq.target_fpr)
    thresholds, per_fold, note = squeeze_calibration(ctx, det)
    with ctx.progress.stage("detector squeeze", ctx.n) as bar:
        stage = detection_stage(ctx.engine, ctx.stages / "detection" / "squeeze", det, False, ctx.inputs, white,
                                ctx.batch_size, ctx.seed, thresholds, bar.advance)
    return detector_outcome("squeeze", det, stage, white, per_fold, note, benign_names(ctx.inputs))


def squeeze_calibration(ctx: RunContext, det, target_fpr: float | None = None, quiet: bool = False
                        ) -> tuple[np.ndarray | None, list[float] | None, str]:
    """Calibrate the squeeze detector ``det`` at ``target_fpr`` (default: its own) the run's way:
    on a calibration folder or the validation split when there is one (``det`` is then fitted),
    else cross-fitted over the test images' folds. The detection stage and the guard stage both
    calibrate here, so the guard is judged with the detection stage's thresholds.

    Returns:
        ``(per-image thresholds, one threshold per fold, how it was calibrated)``; the first two
        are None when ``det`` was fitted once (its ``threshold`` judges every image).
    """
    sq = ctx.config.detectors.squeeze
    assert sq is not None
    if sq.calibration or "val" in ctx.parts:
        from medrobust.data.sources import clean_image_folder

        source = clean_image_folder(sq.calibration, size=ctx.config.data.size) if sq.calibration else ctx.parts["val"]
        clean = first_readable(source, sq.calibration_images, ctx.batch_size, ctx.skipped,
                               "calibrate the squeeze detector on")
        det.fit(ctx.model, clean, target_fpr=target_fpr)
        note = (f"{len(clean)} clean images in {sq.calibration} (none of them tested)" if sq.calibration
                else f"{len(clean)} clean validation images (none of them tested)")
        return None, None, note
    scores = clean_scores_stage(ctx.engine, ctx.stages / "detection" / "squeeze-clean-scores", det, ctx.inputs,
                                ctx.batch_size, ctx.seed)
    folds = cross_fit_folds(ctx.n, sq.folds, ctx.seed)
    thresholds, per_fold = fold_thresholds(
        scores, folds, lambda s: float(det.calibrate(s, target_fpr=target_fpr, quiet=True).threshold))
    note = (f"{len(folds)}-fold cross-fitting over the {ctx.n} clean test images: each image is judged "
            "with a threshold calibrated on the other folds, never on itself")
    if not quiet:
        log.info("squeeze detector: no images besides the test set, so %s", note)
        if ctx.n - max(map(len, folds)) < 1.0 / det.target_fpr:
            log.warning("squeeze detector: about %d clean images per calibration are few for a %.1f%% "
                        "false-alarm target; each threshold is the largest clean score of its folds",
                        ctx.n - max(map(len, folds)), 100 * det.target_fpr)
    return thresholds, per_fold, note


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


def fold_thresholds(scores: np.ndarray, folds: Sequence[np.ndarray],
                    calibrate: Callable[[np.ndarray], float]) -> tuple[np.ndarray, list[float]]:
    """Per image, the threshold calibrated on the other folds' clean ``scores`` (cross-fitting);
    ``calibrate(scores)`` returns a threshold. Returns (per-image thresholds, one per fold)."""
    n = len(scores)
    per_image = np.zeros(n)
    thresholds = []
    all_idx = np.arange(n)
    for fold in folds:
        t = calibrate(scores[np.setdiff1d(all_idx, fold)])
        thresholds.append(t)
        per_image[fold] = t
    return per_image, thresholds


def detection_stage(engine, folder: Path, detector, needs_reference: bool, inputs: StageResult,
                    attacks: list[AttackRun], batch_size: int, seed: int, thresholds: np.ndarray | None = None,
                    advance=None) -> StageResult:
    """:class:`~medrobust.execution.detect_units.DetectUnit` over the attack subset, batch by batch."""
    ids = inputs.summary["ids"]
    n = len(ids)
    sets = DetectUnit.sets([run.key for run in attacks], benign_names(inputs))
    required = frozenset({"seconds", *(f"s{i}__{k}" for i in range(len(sets))
                                      for k in ("flags", "scores", "reasons", "lines"))})

    def unit(b: int, sl: slice) -> DetectUnit:
        return DetectUnit(seed=seed, start=sl.start, detector=detector, needs_reference=needs_reference,
                          clean=inputs.images(b, "clean"), attacked=[run.stage.images(b) for run in attacks],
                          ids=[str(i) for i in ids[sl]], thresholds=None if thresholds is None else thresholds[sl])

    return run_stage(engine, folder, n, batch_size, unit, advance, required)


def benign_names(inputs: StageResult) -> tuple[str, ...] | None:
    """The benign changes of the run's stored images (their grid and rank: CT volumes get the CT
    changes), read from the first batch; None (the radiographs') when there is no image."""
    return benign_names_of(inputs.images(0, "clean")) if len(inputs.summary["ids"]) else None


def clean_scores_stage(engine, folder: Path, detector, inputs: StageResult, batch_size: int, seed: int) -> np.ndarray:
    """The detector's scores on the clean attack-subset images (to cross-fit its threshold)."""
    n = len(inputs.summary["ids"])

    def unit(b: int, sl: slice) -> ScoreUnit:
        return ScoreUnit(seed=seed, start=sl.start, detector=detector, images=inputs.images(b, "clean"))

    return run_stage(engine, folder, n, batch_size, unit, required=frozenset({"scores"})).summary["scores"]


def detector_outcome(name: str, detector, stage: StageResult, attacks: list[AttackRun],
                     fold_threshold_values: list[float] | None = None, calibration: str = "",
                     benign: tuple[str, ...] | None = None) -> DetectorOutcome:
    """The outcome of one detector from its :func:`detection_stage` (with ``fold_threshold_values``
    when it was cross-fitted); ``calibration`` says how it was calibrated, for the report.
    ``benign``: the benign changes the stage judged (default the radiographs'; :func:`benign_names`)."""
    summary = stage.summary
    n = len(summary["s0__flags"])

    def part(i: int, what: str) -> np.ndarray:
        return summary[f"s{i}__{what}"]

    benign_sets = list(DetectUnit.sets([], benign)[1:])
    negatives = np.concatenate([part(i, "scores") for i in range(1 + len(benign_sets))])
    rates, aucs, rocs, reasons = {}, {}, {}, {}
    lines: list[str] = []
    for j, run in enumerate(attacks):
        i = 1 + len(benign_sets) + j
        rates[run.key] = float(part(i, "flags").mean())
        aucs[run.key], rocs[run.key] = _roc(negatives, part(i, "scores"))
        counts = Counter(r for joined in part(i, "reasons").tolist() for r in str(joined).split("|") if r)
        reasons[run.key] = dict(sorted(counts.items()))
        if not lines:
            lines = [str(line) for line in part(i, "lines").tolist()[:MAX_LOG_LINES]]
    threshold = {"score": float(detector.threshold) if getattr(detector, "threshold", None) is not None else 1.0}
    if hasattr(detector, "describe"):
        threshold.update({k: float(v) for k, v in detector.describe().items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if fold_threshold_values:
        threshold.update({"score": float(np.mean(fold_threshold_values)), "score_min": float(min(fold_threshold_values)),
                          "score_max": float(max(fold_threshold_values)), "folds": float(len(fold_threshold_values))})
    latency = float(summary["seconds"].sum()) / max(1, n)
    return DetectorOutcome(
        name=name, threshold=threshold, detection_rate=rates, fpr_clean=float(part(0, "flags").mean()),
        fpr_benign={k: float(part(1 + i, "flags").mean()) for i, k in enumerate(benign_sets)}, roc_auc=aucs,
        roc=rocs, reasons=reasons, latency_ms_per_image=1000.0 * latency, log_lines=lines, calibration=calibration,
    )
