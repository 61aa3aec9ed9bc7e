"""Detection metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medrobust.detection.metrics import (
    calibrated_threshold,
    detection_accuracy,
    detection_rate,
    false_positive_rate,
    latency,
    roc_auc,
    roc_curve_points,
)


def test_rates_and_accuracy() -> None:
    attacked = np.array([True, True, False, True])  # 3 of 4 caught
    clean = np.array([False, True, False, False, False])  # 1 of 5 false alarms
    assert detection_rate(attacked) == 0.75
    assert false_positive_rate(clean) == 0.2
    assert detection_accuracy(clean, attacked) == pytest.approx((3 + 4) / 9)
    assert detection_rate(np.array([1, 0])) == 0.5
    with pytest.raises(ValueError, match="undefined"):
        false_positive_rate(np.array([], dtype=bool))
    with pytest.raises(ValueError, match="0/1"):
        detection_rate(np.array([0.3]))


def test_roc_auc_by_hand() -> None:
    clean = np.array([0.1, 0.4, 0.35])
    attacked = np.array([0.8, 0.4, 0.2])
    # pairs (attacked > clean): 0.8 beats 3; 0.4 beats 0.1, 0.35 and ties 0.4 (1/2); 0.2 beats 0.1
    assert roc_auc(clean, attacked) == pytest.approx((3 + 2.5 + 1) / 9)
    assert roc_auc([0, 0], [1, 1]) == 1.0
    assert roc_auc([1, 1], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0.0, np.nan], [1.0])


def test_roc_curve_points() -> None:
    curve = roc_curve_points(np.array([0.1, 0.2]), np.array([0.3, 0.15]))
    # thresholds inf, 0.3, 0.2, 0.15, 0.1 -> (fpr, tpr) (0,0) (0,.5) (.5,.5) (.5,1) (1,1)
    np.testing.assert_allclose(curve.fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(curve.tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(curve.thresholds[1:], [0.3, 0.2, 0.15, 0.1])
    assert curve.to_json()["fpr"][-1] == 1.0


def test_calibrated_threshold_order_statistic() -> None:
    scores = np.arange(1, 101, dtype=float)  # 1..100
    # k = floor(0.05 * 100) = 5 may exceed: t = s_(95) = 95, and 96..100 are above
    assert calibrated_threshold(scores, 0.05) == 95.0
    assert (scores > 95.0).mean() == 0.05
    # k = floor(0.049 * 100) = 4: t = 96
    assert calibrated_threshold(scores, 0.049) == 96.0
    # k = 0: the largest score, nothing flagged
    assert calibrated_threshold(scores[:10], 0.05) == 10.0
    assert calibrated_threshold(scores, 0.0) == 100.0
    # held-out (conformal) rule: k = floor(0.05 * 101) - 1 = 4 -> t = 96; expected FPR 5/101 <= 5%
    assert calibrated_threshold(scores, 0.05, held_out_guarantee=True) == 96.0
    with pytest.raises(ValueError, match="cannot guarantee"):
        calibrated_threshold(scores[:10], 0.05, held_out_guarantee=True)
    with pytest.raises(ValueError, match="target_fpr"):
        calibrated_threshold(scores, 5)


@pytest.mark.parametrize("target", [0.01, 0.05, 0.1, 0.33])
def test_calibrated_fpr_never_exceeds_target_even_with_ties(target: float) -> None:
    rng = np.random.default_rng(0)
    for n in (7, 50, 333):
        scores = np.round(rng.random(n), 1)  # many ties
        t = calibrated_threshold(scores, target)
        assert (scores > t).mean() <= target + 1e-12
        assert t in scores


def test_latency_is_measured() -> None:
    calls = []
    result = latency(lambda: calls.append(1), n_images=10, repeats=3, warmup=2)
    assert len(calls) == 5
    assert result.seconds_per_image >= 0 and result.seconds_per_image == pytest.approx(result.seconds_per_call / 10)
    assert result.to_json()["repeats"] == 3
    with pytest.raises(ValueError):
        latency(lambda: None, n_images=0)
