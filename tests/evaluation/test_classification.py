"""Classification metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_recall_fscore_support

from medrobust.evaluation.classification import accuracy_drop_pp, classification_report, dangerous_flips

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


def test_report_matches_hand_computed_values() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 0, 2])
    r = classification_report(y, p, CLASSES)
    assert r.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert r.accuracy == pytest.approx(4 / 6)
    assert r.per_class["Pneumonia"].precision == pytest.approx(2 / 3)
    assert r.per_class["Pneumothorax"].recall == pytest.approx(1 / 2)
    # specificity of Normal: TN = 3 (rows 1, 2 not predicted 0 except the one FP), FP = 1
    assert r.per_class["Normal"].specificity == pytest.approx(3 / 4)


def test_report_agrees_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    r = classification_report(y, p, CLASSES)
    assert np.array_equal(np.array(r.confusion_matrix), sk_confusion(y, p, labels=[0, 1, 2]))
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=[0, 1, 2], zero_division=0)
    for i, c in enumerate(CLASSES):
        assert r.per_class[c].precision == pytest.approx(prec[i])
        assert r.per_class[c].recall == pytest.approx(rec[i])
        assert r.per_class[c].f1 == pytest.approx(f1[i])
        assert r.per_class[c].support == sup[i]


def test_accuracy_drop_and_dangerous_flips() -> None:
    y = np.array([0, 1, 1, 2, 2, 2])
    clean = np.array([0, 1, 1, 2, 2, 0])
    adv = np.array([1, 0, 1, 0, 0, 0])
    drop = accuracy_drop_pp(classification_report(y, clean, CLASSES), classification_report(y, adv, CLASSES))
    assert drop == pytest.approx({"Normal": 100.0, "Pneumonia": 50.0, "Pneumothorax": 200 / 3})
    flips = {f.true_class: f for f in dangerous_flips(y, clean, adv, CLASSES, normal=0, emergency=[2])}
    assert flips["Pneumothorax"].count == 2 and flips["Pneumothorax"].rate == pytest.approx(1.0)
    assert flips["Pneumonia"].count == 1 and flips["Pneumonia"].rate == pytest.approx(0.5)
    assert flips["Pneumothorax"].emergency and not flips["Pneumonia"].emergency


def test_flips_without_a_normal_class_are_not_assessed_not_zero() -> None:
    y = np.array([0, 1, 1])
    assert dangerous_flips(y, y, np.array([0, 0, 0]), ["A", "B"], normal=None) is None


def test_undefined_metrics_are_none_not_zero() -> None:
    # class 2 has no images and is never predicted: its recall, precision and F1 are undefined
    r = classification_report(np.array([0, 1, 1]), np.array([0, 1, 0]), CLASSES)
    m = r.per_class["Pneumothorax"]
    assert m.recall is None and m.precision is None and m.f1 is None and m.support == 0
    assert m.specificity == pytest.approx(1.0)
    before = classification_report(np.array([0, 1]), np.array([0, 1]), CLASSES)
    assert accuracy_drop_pp(before, before)["Pneumothorax"] is None
