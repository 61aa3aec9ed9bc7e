"""The robustness score's reference budget is the stored grid's (issue 29): the area is taken up to
8/255 on 8-bit data (every number as before) and up to 16 HU on CT, so a CT run swept over 2-16 HU is
scored instead of reading "not defined" (its budgets never reach 8/255 = 128 HU)."""

from __future__ import annotations

import pytest

from medrobust.data.stored_grid import CT_HU, EIGHT_BIT, grid_of_record
from medrobust.evaluation.results import RunMetrics, SweepPoint
from medrobust.evaluation.robustness_curve import AUC_BUDGET, auc_bounds, normalised_auc
from medrobust.evaluation.scorecard import DEFINITIONS, build_scorecard, definitions
from tests.report.conftest import make_metrics

CT_RECORD = {"name": "CT", "unit": "HU", "low": -1024, "high": 3071}


def _metrics(levels: int, grid: dict | None) -> RunMetrics:
    """A white-box PGD row at budgets 2, 4, 8 and 16 steps of ``levels`` (HU on CT, grey levels on
    8-bit): accuracy the clean accuracy c at 2, c/2 at 4 (the main budget) and 0 from 8 on."""
    base = make_metrics(transfer=False, defenses=False, detectors=False)
    pgd = next(a for a in base.attacks if a.attack == "pgd").model_dump()
    clean = pgd["clean"]["accuracy"]
    pgd.update(eps=4 / levels, key="pgd@4", adversarial={**pgd["adversarial"], "accuracy": clean / 2})
    sweep = [SweepPoint(eps=k / levels, accuracy=a) for k, a in ((2, clean), (4, clean / 2), (8, 0.0), (16, 0.0))]
    data = {**base.data, **({"grid": grid, "noise": {"std": 6.0, "unit": "HU", "method": "test"}} if grid else {})}
    return RunMetrics.model_validate({**base.model_dump(), "data": data, "attacks": [pgd], "eps_sweep": {"pgd": sweep}})


def test_the_score_budget_is_the_grid_s():
    assert EIGHT_BIT.score_budget == AUC_BUDGET == 8 / 255
    assert CT_HU.score_budget == 16 / 4095 and CT_HU.eps_in_units(CT_HU.score_budget) == pytest.approx(16.0)
    assert grid_of_record(CT_RECORD) is CT_HU and grid_of_record(None) is EIGHT_BIT


def test_a_ct_curve_is_scored_up_to_16_hu_with_known_numbers():
    row = build_scorecard(_metrics(4095, CT_RECORD)).row("white-box")
    # area over [0, 16 HU]: 2 c (flat) + 2 x 0.75 c + 4 x 0.25 c + 0 = 4.5 c, over 16 c: 28.125
    assert row.score == pytest.approx(28.125)
    # bounds from monotone curves through the points: low 2c + 2(c/2) = 3c -> 18.75; high 2c + 2c + 4(c/2) = 6c -> 37.5
    assert (row.score_low, row.score_high) == (pytest.approx(18.75), pytest.approx(37.5))
    assert [p.value for p in row.points] == [2, 4, 8, 16] and {p.units for p in row.points} == {"HU"}
    assert row.measured_at == pytest.approx([k / 4095 for k in (2, 4, 8, 16)])
    clean = row.clean_accuracy
    curve = [(2 / 4095, clean), (4 / 4095, clean / 2), (8 / 4095, 0.0), (16 / 4095, 0.0)]
    assert normalised_auc(clean, curve, CT_HU.score_budget) == pytest.approx(28.125)
    # the 8/255 budget would leave the same CT curve unscored (16 HU is far below 128 HU)
    assert normalised_auc(clean, [(16 / 4095, 0.0)]) is None


def test_an_8_bit_curve_is_scored_as_before():
    card = build_scorecard(_metrics(255, None))
    row = card.row("white-box")
    # up to 8/255: 2c + 2 x 0.75c + 4 x 0.25c = 4.5c over 8c; the 16/255 point lies beyond the budget
    assert row.score == pytest.approx(56.25)
    assert (row.score_low, row.score_high) == (pytest.approx(37.5), pytest.approx(75.0))
    assert auc_bounds(row.clean_accuracy, [(4 / 255, row.clean_accuracy / 2), (8 / 255, 0.0)]) == \
        (pytest.approx(25.0), pytest.approx(75.0))
    assert card.definitions == {k: v for k, v in DEFINITIONS.items() if k in card.definitions}
    assert card.grid == pytest.approx([2 / 255, 4 / 255, 8 / 255])


def test_the_definitions_say_16_hu_on_ct_and_why():
    card = build_scorecard(_metrics(4095, CT_RECORD))
    assert "up to 16 HU" in card.definitions["score"] and "noise" in card.definitions["score"]
    assert "8/255" not in card.definitions["score"] + card.definitions["grid"]
    assert "HU" in card.definitions["half_accuracy_budget"]
    assert definitions(EIGHT_BIT) == DEFINITIONS
