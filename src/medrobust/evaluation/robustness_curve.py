"""The numbers a scorecard reads off an accuracy-versus-budget curve, and the binomial
confidence interval of an accuracy. Pure functions: numbers in, numbers out.

The curve. Accuracy is measured at a few L-inf budgets ``eps_1 < ... < eps_m`` (in [0, 1]
image units), and is ``a_0`` (the clean accuracy) at ``eps = 0``. An attacker with budget
``eps`` may use any smaller budget, so the attacked accuracy at ``eps_k`` is taken as
``min_{j <= k} a_j`` (the lower envelope; :func:`lower_envelope`), and the curve is the
straight-line interpolation between consecutive points.

* :func:`normalised_auc` — ``100 / (a_0 * E) * integral_0^E a(eps) d eps`` with ``E`` the data's
  stored grid's score budget (:attr:`~medrobust.data.stored_grid.StoredGrid.score_budget`):
  ``E = 8/255`` on 8-bit images (:data:`AUC_BUDGET`, the default), ``E = 16 HU = 16/4095`` on CT,
  about two to three times a routine head CT's image noise and under half the contrast between
  fresh blood and brain (40-50 HU), so an attacker inside it makes no change a reader would see as
  a lesion (8/255 on the CT grid would be 128 HU, and an HU grid of 2-16 HU would never reach it).
  100 when accuracy never falls below clean, 0 when it is zero at once. Undefined (None)
  when the largest tested budget is below ``E`` (the curve is not known up to ``E``) or the
  clean accuracy is 0.
* :func:`auc_bounds` — the lowest and highest score any non-increasing curve through the tested
  points would give: how much of the score is interpolation;
* :func:`half_accuracy_budget` — the smallest budget at which the curve reaches ``a_0 / 2``,
  interpolated on the segment where it first does; None when it never does on the tested range.
* :func:`wilson_interval` — the Wilson score interval (Wilson 1927) of ``k`` successes in
  ``n`` trials: ``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``, z = 1.96 for 95%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from medrobust.data.stored_grid import EIGHT_BIT

AUC_BUDGET = EIGHT_BIT.score_budget
"""The budget up to which the area under the accuracy curve is taken on 8-bit images (8 grey
levels); on CT it is 16 HU (``CT_HU.score_budget``): each function takes the grid's as ``budget``."""
MIN_SCORED_BUDGETS = 3
"""Budgets in (0, E] (E the grid's score budget: 8/255, CT 16 HU) a curve needs before its area is a
score: tested at E alone, any model at 0% there would score 50 (the straight line from the clean
accuracy), whatever it does below."""


def lower_envelope(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """``(eps, accuracy)`` sorted by budget, each accuracy the lowest at that budget or below."""
    out: list[tuple[float, float]] = []
    lowest = math.inf
    for eps, acc in sorted(points):
        lowest = min(lowest, acc)
        if out and abs(out[-1][0] - eps) < 1e-12:
            out[-1] = (eps, lowest)
        else:
            out.append((eps, lowest))
    return out


def _curve(clean: float, points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return lower_envelope([(0.0, clean), *((e, a) for e, a in points if e > 0)])


def normalised_auc(clean: float, points: Sequence[tuple[float, float]], budget: float = AUC_BUDGET) -> float | None:
    """The area under the curve from 0 to ``budget`` over ``clean * budget``, times 100 (see the
    module docstring); None when undefined."""
    curve = _curve(clean, points)
    if clean <= 0 or curve[-1][0] < budget - 1e-12:
        return None
    area = 0.0
    for (e0, a0), (e1, a1) in zip(curve, curve[1:]):
        if e0 >= budget:
            break
        if e1 > budget:  # cut the segment at the budget
            a1 = a0 + (a1 - a0) * (budget - e0) / (e1 - e0)
            e1 = budget
        area += (e1 - e0) * (a0 + a1) / 2
    return 100.0 * area / (clean * budget)


def auc_bounds(clean: float, points: Sequence[tuple[float, float]],
               budget: float = AUC_BUDGET) -> tuple[float, float] | None:
    """How much of :func:`normalised_auc` is interpolation: the score's lowest and highest values
    for any curve through the tested points that never rises with the budget (an attacker with a
    larger budget can do what a smaller one did). Between two tested budgets the accuracy lies
    between their accuracies, so the lowest curve is the step down to the next point's accuracy,
    the highest the step that holds the previous one; None where the score is undefined.

    >>> [round(v, 6) for v in auc_bounds(0.9, [(4 / 255, 0.45), (8 / 255, 0.0)])]  # halves at 4/255
    [25.0, 75.0]
    """
    curve = _curve(clean, points)
    if clean <= 0 or curve[-1][0] < budget - 1e-12:
        return None
    low = high = 0.0
    for (e0, a0), (e1, a1) in zip(curve, curve[1:]):
        if e0 >= budget:
            break
        width = min(e1, budget) - e0
        low += width * a1
        high += width * a0
    return 100.0 * low / (clean * budget), 100.0 * high / (clean * budget)


def half_accuracy_budget(clean: float, points: Sequence[tuple[float, float]]) -> float | None:
    """The smallest budget at which accuracy falls to half of ``clean`` or below (interpolated);
    None when it never does on the tested budgets (or ``clean`` is 0)."""
    if clean <= 0:
        return None
    target = clean / 2
    curve = _curve(clean, points)
    for (e0, a0), (e1, a1) in zip(curve, curve[1:]):
        if a1 <= target:
            return e0 + (e1 - e0) * (a0 - target) / (a0 - a1) if a0 > a1 else e1
    return None


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """The Wilson score interval of the proportion ``k / n`` (95% by default); None for n = 0."""
    if n <= 0:
        return None
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)
