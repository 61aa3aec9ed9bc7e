"""The scorecard's curve numbers: known answers, properties, and the Wilson interval against
scipy's independent implementation of the same formula."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medrobust.evaluation.robustness_curve import (
    AUC_BUDGET,
    half_accuracy_budget,
    lower_envelope,
    normalised_auc,
    wilson_interval,
)

E = AUC_BUDGET


def test_known_areas() -> None:
    assert normalised_auc(0.9, [(E, 0.9)]) == pytest.approx(100.0)  # never falls
    assert normalised_auc(0.9, [(E, 0.0)]) == pytest.approx(50.0)  # a straight line down to 0 at 8/255
    assert normalised_auc(0.8, [(E / 2, 0.0), (E, 0.0)]) == pytest.approx(25.0)  # zero from half the budget
    assert normalised_auc(0.8, [(1 / 255, 0.0), (E, 0.0)]) == pytest.approx(100 * (0.5 / 8))
    # a budget beyond 8/255: the segment is cut at 8/255 (0.8 -> 0 over 16/255: 0.4 at 8/255)
    assert normalised_auc(0.8, [(16 / 255, 0.0)]) == pytest.approx(100 * (0.8 + 0.4) / 2 / 0.8)


def test_undefined_areas() -> None:
    assert normalised_auc(0.9, [(4 / 255, 0.1)]) is None  # the curve is not known up to 8/255
    assert normalised_auc(0.0, [(E, 0.0)]) is None


def test_half_accuracy_budget() -> None:
    assert half_accuracy_budget(0.8, [(E, 0.0)]) == pytest.approx(E / 2)
    assert half_accuracy_budget(0.8, [(2 / 255, 0.6), (4 / 255, 0.2)]) == pytest.approx(3 / 255)
    assert half_accuracy_budget(0.8, [(E, 0.5)]) is None  # never reaches 0.4
    assert half_accuracy_budget(0.8, [(1 / 255, 0.4)]) == pytest.approx(1 / 255)  # exactly half counts


def test_a_stronger_small_budget_bounds_the_larger_one() -> None:
    assert lower_envelope([(2 / 255, 0.3), (4 / 255, 0.5), (1 / 255, 0.6)]) == [(1 / 255, 0.6), (2 / 255, 0.3),
                                                                                 (4 / 255, 0.3)]


accuracies = st.floats(min_value=0.0, max_value=1.0)
budgets = st.sampled_from([1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255])


@given(clean=st.floats(min_value=0.05, max_value=1.0), points=st.lists(st.tuples(budgets, accuracies), min_size=1))
def test_score_properties(clean: float, points) -> None:
    points = [(e, min(a, clean)) for e, a in points] + [(E, min(a for _, a in points))]
    score = normalised_auc(clean, points)
    assert score is not None and -1e-9 <= score <= 100 + 1e-9
    weaker = [(e, min(clean, a + 0.1)) for e, a in points]  # every attack a little less successful
    assert normalised_auc(clean, weaker) >= score - 1e-9


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (45, 90), (1, 1)])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-9)
    assert wilson_interval(0, 0) is None
