"""Certified accuracy of a smoothed classifier (Cohen et al. 2019, Sec. 4): the share of images it
classifies correctly with a certified L2 radius of at least ``r`` — pure functions of numpy arrays,
shared by the ``certify`` stage and ``mr.certify``.

An abstention (no prediction, no radius) counts as wrong at every radius, and so does a correct
prediction whose radius is smaller than ``r``; the denominator is every image certified.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from medrobust.evaluation.results import CertifiedPoint
from medrobust.evaluation.robustness_curve import wilson_interval

REPORT_RADII = (0.1, 0.25, 0.5, 1.0)
"""The L2 radii (in [0, 1] image units) the report and the scorecard give certified accuracy at."""
CURVE_POINTS = 51
"""Radii of the certified-accuracy curve, evenly spaced from 0 to the largest radius shown."""
CERTIFIED_LABEL = "certified (L2, randomized smoothing)"
HOLDS_FOR = ("the smoothed classifier (Gaussian noise added to the image, then the base model's majority vote over "
             "the draws), not the base model answering once")
CERTIFIED_DEFINITION = (
    "Certified accuracy at radius r = the share of images that the smoothed classifier (the base model's majority vote "
    "under Gaussian noise of standard deviation sigma; Cohen, Rosenfeld & Kolter 2019) classifies correctly with a "
    "certified L2 radius of at least r, in [0, 1] image units: with probability at least 1 - alpha per image, no "
    "change of L2 norm below r changes its answer. An abstention counts as wrong. The guarantee holds for the "
    "smoothed classifier, not for the base model answering once; it is not an empirical figure and never part of "
    "the overall score. Grey levels per pixel: the same L2 norm spread evenly over every pixel "
    "(r / sqrt(C x H x W) x 255), to set beside the L-inf budgets.")


def largest_certifiable_radius(sigma: float, draws: int, alpha: float) -> float:
    """The largest L2 radius CERTIFY can give any image with ``draws`` estimation draws at
    ``alpha``: every draw voting for the class gives Clopper-Pearson's lower bound
    ``p_A = alpha ** (1 / draws)`` (the Beta(draws, 1) quantile at alpha), so
    ``R_max = sigma x Phi^-1(alpha ** (1 / draws))``. Certified accuracy at a larger radius is 0
    by the number of draws, whatever the model (Cohen et al. 2019, Sec. 4: more draws reach farther).

    >>> round(largest_certifiable_radius(0.25, 1000, 0.001), 3)
    0.616
    """
    return float(sigma * NormalDist().inv_cdf(alpha ** (1.0 / draws)))


def certified_accuracy(labels: np.ndarray, prediction: np.ndarray, radius: np.ndarray, r: float) -> float:
    """The share of images predicted right with a certified radius of at least ``r``.

    Args:
        labels: (N,) true class indices.
        prediction: (N,) certified class indices (negative: abstained).
        radius: (N,) certified L2 radii (NaN: abstained).
        r: the radius asked about, in the radii's units.

    Returns:
        The share in [0, 1] (0.0 for no image).

    >>> certified_accuracy(np.array([0, 1, 1]), np.array([0, 1, -1]), np.array([0.3, 0.1, np.nan]), 0.25)
    0.3333333333333333
    """
    if not len(labels):
        return 0.0
    radius = np.nan_to_num(np.asarray(radius, dtype=np.float64), nan=-1.0)
    right = (np.asarray(prediction) == np.asarray(labels)) & (np.asarray(prediction) >= 0) & (radius >= r)
    return float(right.mean())


def grey_levels_per_pixel(radius: float, pixels: int) -> float:
    """An L2 radius in [0, 1] units spread evenly over ``pixels`` values (C x H x W), in grey levels
    of an 8-bit image: ``radius / sqrt(pixels) x 255``, the L-inf budget whose every-pixel change
    has that L2 norm (for comparison with the L-inf budgets)."""
    return float(radius / math.sqrt(max(1, pixels)) * 255.0)


def certified_points(labels: np.ndarray, prediction: np.ndarray, radius: np.ndarray, pixels: int,
                     radii: tuple[float, ...] | list[float] = REPORT_RADII) -> list[CertifiedPoint]:
    """Certified accuracy at each of ``radii``, with its grey levels per pixel and 95% interval."""
    n = len(labels)
    points = []
    for r in radii:
        acc = certified_accuracy(labels, prediction, radius, r)
        ci = wilson_interval(round(acc * n), n) if n else None
        points.append(CertifiedPoint(radius=float(r), grey_levels_per_pixel=round(grey_levels_per_pixel(r, pixels), 6),
                                     accuracy=acc, interval=list(ci) if ci else None))
    return points


def certified_curve(labels: np.ndarray, prediction: np.ndarray, radius: np.ndarray, pixels: int) -> list[CertifiedPoint]:
    """The curve radius -> certified accuracy at :data:`CURVE_POINTS` radii from 0 to the larger of
    the largest report radius and the largest radius certified."""
    finite = np.asarray(radius, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    top = max(REPORT_RADII[-1], float(finite.max()) if len(finite) else 0.0)
    grid = [round(float(r), 6) for r in np.linspace(0.0, top, CURVE_POINTS)]
    return certified_points(labels, prediction, radius, pixels, grid)
