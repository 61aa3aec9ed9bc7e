"""How good a detector is: detection rate, false positive rate, ROC, threshold calibration
and measured latency.

Pure functions of numpy arrays (flags are bool, scores float; attacked images are the
positives), except :func:`latency`, which times a call.

* detection rate (true positive rate) = flagged attacked images / attacked images;
* false positive rate = flagged clean images / clean images;
* detection accuracy = (flagged attacked + unflagged clean) / all images — the study's
  "detection accuracy" when it is measured on a mix of attacked and clean images;
* ROC-AUC (scikit-learn's ``roc_auc_score``): the probability that a random attacked image
  scores above a random clean one (ties count one half); 0.5 is chance.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def _flags(flags: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(flags).reshape(-1)
    if a.size == 0:
        raise ValueError(f"no {what} images: the rate is undefined")
    if a.dtype != bool:
        if not np.isin(a, (0, 1)).all():
            raise ValueError(f"{what} flags must be booleans or 0/1")
        a = a.astype(bool)
    return a


def detection_rate(flags_attacked: np.ndarray) -> float:
    """True positive rate: the fraction of attacked images flagged.

    Args:
        flags_attacked: the detector's flags on attacked images, (N,) bool or 0/1, N >= 1.

    Returns:
        A fraction in [0, 1].

    Raises:
        ValueError: no image, or flags that are not booleans or 0/1.
    """
    return float(_flags(flags_attacked, "attacked").mean())


def false_positive_rate(flags_clean: np.ndarray) -> float:
    """The fraction of clean (or benignly changed) images flagged.

    Args:
        flags_clean: the detector's flags on clean images, (N,) bool or 0/1, N >= 1.

    Returns:
        A fraction in [0, 1].

    Raises:
        ValueError: no image, or flags that are not booleans or 0/1.
    """
    return float(_flags(flags_clean, "clean").mean())


def detection_accuracy(flags_clean: np.ndarray, flags_attacked: np.ndarray) -> float:
    """``(TP + TN) / (P + N)`` over attacked (positive) and clean (negative) images.

    Args:
        flags_clean: flags on clean images, (N,) bool or 0/1, N >= 1.
        flags_attacked: flags on attacked images, (P,) bool or 0/1, P >= 1.

    Returns:
        A fraction in [0, 1].
    """
    clean, attacked = _flags(flags_clean, "clean"), _flags(flags_attacked, "attacked")
    return float((attacked.sum() + (~clean).sum()) / (len(clean) + len(attacked)))


def _scores(scores_clean: np.ndarray, scores_attacked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    clean = np.asarray(scores_clean, dtype=np.float64).reshape(-1)
    attacked = np.asarray(scores_attacked, dtype=np.float64).reshape(-1)
    if clean.size == 0 or attacked.size == 0:
        raise ValueError(f"a ROC needs clean and attacked scores, got {clean.size} clean and {attacked.size} attacked")
    if np.isnan(clean).any() or np.isnan(attacked).any():
        raise ValueError("scores contain NaN")
    scores = np.concatenate([clean, attacked])
    finite = scores[np.isfinite(scores)]
    if len(finite) < len(scores):  # +inf (a model output that was not finite): above every finite score, same order
        top, bottom = (float(finite.max()), float(finite.min())) if len(finite) else (0.0, 0.0)
        scores = np.where(np.isposinf(scores), top + 1.0, np.where(np.isneginf(scores), bottom - 1.0, scores))
    y = np.concatenate([np.zeros(clean.size), np.ones(attacked.size)])
    return y, scores


def roc_auc(scores_clean: np.ndarray, scores_attacked: np.ndarray) -> float:
    """Area under the ROC curve with attacked images as positives.

    Args:
        scores_clean: suspicion scores of clean images, at least one, no NaN (+inf allowed).
        scores_attacked: suspicion scores of attacked images, at least one, no NaN.

    Returns:
        The AUC in [0, 1]; 0.5 is chance.

    Example:

    >>> roc_auc([0.1, 0.2, 0.3], [0.25, 0.9])
    0.8333333333333334
    """
    y, s = _scores(scores_clean, scores_attacked)
    return float(roc_auc_score(y, s))


@dataclass(frozen=True)
class RocCurve:
    """ROC points: ``fpr[i]``, ``tpr[i]`` when flagging ``score >= thresholds[i]``.

    Args:
        fpr: (M,) false positive rates, non-decreasing, from 0 to 1.
        tpr: (M,) true positive rates, non-decreasing, from 0 to 1.
        thresholds: (M,) score thresholds, decreasing (the first is +inf: nothing flagged).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def to_json(self) -> dict[str, list[float | None]]:
        """``{"fpr", "tpr", "thresholds"}`` as lists of floats; non-finite values become None."""
        return {k: [float(v) if np.isfinite(v) else None for v in getattr(self, k)]
                for k in ("fpr", "tpr", "thresholds")}


def roc_curve_points(scores_clean: np.ndarray, scores_attacked: np.ndarray) -> RocCurve:
    """The ROC curve (scikit-learn's ``roc_curve``, all points kept).

    Args:
        scores_clean: suspicion scores of clean images, at least one, no NaN (+inf allowed).
        scores_attacked: suspicion scores of attacked images, at least one, no NaN.

    Returns:
        A :class:`RocCurve`.
    """
    y, s = _scores(scores_clean, scores_attacked)
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    return RocCurve(fpr, tpr, thresholds)


def calibrated_threshold(scores: np.ndarray, target_fpr: float, held_out_guarantee: bool = False) -> float:
    """The threshold ``t`` such that flagging ``score > t`` flags at most ``target_fpr`` of
    the clean calibration ``scores``.

    With the n clean scores sorted ``s_(1) <= ... <= s_(n)`` and ``k = floor(target_fpr * n)``
    images allowed above the threshold, ``t = s_(n-k)``: the empirical (1 - k/n) quantile
    taken at an order statistic (numpy's ``inverted_cdf``). At most k scores exceed it
    (fewer when scores tie at ``t``), so the realised FPR on the calibration set is
    ``<= k/n <= target_fpr``. ``k = 0`` gives the largest clean score.

    On new clean images from the same distribution the expected FPR of this rule is
    ``(k + 1) / (n + 1)`` (the rank of a new score among n + 1 is uniform), i.e. the target
    plus at most ``1 / (n + 1)``. ``held_out_guarantee=True`` uses
    ``k = floor(target_fpr * (n + 1)) - 1`` instead, so that expectation is ``<= target_fpr``
    (the split-conformal rule); it needs ``n >= 1 / target_fpr - 1`` clean images.

    Args:
        scores: the clean calibration scores, at least one, no NaN (any shape).
        target_fpr: the largest false positive rate allowed, in [0, 1).
        held_out_guarantee: bound the expected FPR on new clean images instead of the realised
            FPR on these. Default False.

    Returns:
        The threshold ``t``, one of ``scores``.

    Raises:
        ValueError: no score, a NaN, ``target_fpr`` out of range, or too few scores for
            ``held_out_guarantee``.

    Example:

    >>> calibrated_threshold([float(v) for v in range(1, 101)], target_fpr=0.05)
    95.0
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    n = s.size
    if n == 0:
        raise ValueError("calibration needs at least one clean score")
    if np.isnan(s).any():
        raise ValueError("calibration scores contain NaN")
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr} (5% is 0.05)")
    if held_out_guarantee:
        k = math.floor(target_fpr * (n + 1) + 1e-9) - 1
        if k < 0:
            raise ValueError(f"{n} clean images cannot guarantee a held-out FPR of {target_fpr:.1%}; "
                             f"use at least {math.ceil(1 / target_fpr - 1)} or a larger target")
    else:
        k = math.floor(target_fpr * n + 1e-9)
    k = min(k, n - 1)
    return float(s[n - k - 1])


@dataclass(frozen=True)
class Latency:
    """Measured wall time of a detector call: the median over repeats, per image."""

    seconds_per_image: float
    seconds_per_call: float
    n_images: int
    repeats: int

    def to_json(self) -> dict[str, float | int]:
        return {"seconds_per_image": self.seconds_per_image, "seconds_per_call": self.seconds_per_call,
                "n_images": self.n_images, "repeats": self.repeats}


def latency(call: Callable[[], object], n_images: int, repeats: int = 3, warmup: int = 1) -> Latency:
    """Time ``call()`` (which processes ``n_images`` images) ``repeats`` times after ``warmup``
    untimed calls; report the median. A measurement, not a guarantee: shared machines are noisy.

    Args:
        call: the detector call to time, without arguments.
        n_images: the images one call processes, at least 1.
        repeats: timed calls, at least 1. Default 3.
        warmup: untimed calls first, at least 0. Default 1.

    Returns:
        A :class:`Latency` (seconds per image and per call, the median of the repeats).
    """
    if n_images < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need n_images >= 1, repeats >= 1, warmup >= 0; got {n_images}, {repeats}, {warmup}")
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    per_call = statistics.median(times)
    return Latency(per_call / n_images, per_call, n_images, repeats)
