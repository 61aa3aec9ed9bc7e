"""The scorecard's certificate (``scorecard.json`` ``certified``): randomized smoothing's certified
accuracy at the report's radii, read from a run's metrics alone, kept apart from the empirical rows
(DESIGN.md, "Evidence": guarantees and empirical figures are never mixed into one number)."""

from __future__ import annotations

from medrobust.evaluation.certified_accuracy import CERTIFIED_LABEL, HOLDS_FOR, largest_certifiable_radius
from medrobust.evaluation.results import RunMetrics
from medrobust.evaluation.scorecard_schema import CertifiedEntry, CertifiedRadius

NOT_RUN = ("provable robustness (L2 radii by randomized smoothing): not computed (no certify section: medrobust "
           "evaluate --certify, best on a model trained under the same noise, train.noise_sigma)")
"""The ``not_tested`` line of a run without certificates (worded without "certified": a statement that
has none must not read as if it claimed one)."""


def certified_entry(metrics: RunMetrics) -> CertifiedEntry | None:
    """The run's certificate entry, or None when no certificate was computed."""
    c = metrics.certified
    if c is None:
        return None
    return CertifiedEntry(
        label=CERTIFIED_LABEL, holds_for=HOLDS_FOR, n_images=c.n, sigma=c.sigma, n0=c.n0, draws=c.draws, alpha=c.alpha,
        points=[CertifiedRadius(radius=p.radius, grey_levels_per_pixel=p.grey_levels_per_pixel, accuracy=p.accuracy,
                                interval=p.interval) for p in c.points],
        largest_radius=round(largest_certifiable_radius(c.sigma, c.draws, c.alpha), 6),
        abstention_rate=c.abstention_rate, smoothed_clean_accuracy=c.smoothed_clean_accuracy,
        base_clean_accuracy=c.base_clean_accuracy, note=c.note)
