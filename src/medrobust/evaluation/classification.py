"""Classification metrics in clinical terms: per-class precision, recall (sensitivity),
specificity and F1, the confusion matrix, accuracy drops and dangerous flips.

Pure functions of integer label arrays; ``classes`` names the indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medrobust.data.class_names import NO_ANSWER, NOT_ASSESSED_NO_NORMAL, decision_name
from medrobust.evaluation.results import ClassificationReport, ClassMetrics, DangerousFlip

__all__ = ["NOT_ASSESSED_NO_NORMAL", "NO_ANSWER", "accuracy_drop_pp", "classification_report", "confusion_matrix",
           "dangerous_flips", "decision_name"]

def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts, rows true class, columns predicted class; an image without an answer
    (prediction :data:`~medrobust.models.output_kind.NO_ANSWER`, the model's output was not
    finite) is in no column."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    answered = y_pred >= 0
    y_true, y_pred = y_true[answered], y_pred[answered]
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(num: float, den: float) -> float | None:
    """num / den, or None where it is undefined (never a made-up 0)."""
    return float(num / den) if den else None


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> ClassificationReport:
    """Accuracy, confusion matrix and per-class precision / recall / specificity / F1.

    For class k: TP = cm[k, k], FN = row k minus TP, FP = column k minus TP, TN = the rest;
    precision = TP / (TP + FP), recall (sensitivity) = TP / (TP + FN),
    specificity = TN / (TN + FP), F1 = 2 PR / (P + R); None where undefined (a zero
    denominator), accuracy 0 for no images. An image without an answer (``NO_ANSWER``: the
    model's output was not finite) is wrong: a false negative of its class, in no column of the
    confusion matrix, counted in ``no_answer``.
    """
    k = len(classes)
    y_true = np.asarray(y_true, dtype=np.int64)
    cm = confusion_matrix(y_true, y_pred, k)
    n = int(len(y_true))
    support = np.bincount(y_true, minlength=k)
    per: dict[str, ClassMetrics] = {}
    for i, name in enumerate(classes):
        tp = cm[i, i]
        fn = support[i] - tp
        fp = cm[:, i].sum() - tp
        tn = n - tp - fn - fp
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        f1 = None if precision is None or recall is None else (_ratio(2 * precision * recall, precision + recall) or 0.0)
        per[name] = ClassMetrics(precision=precision, recall=recall, specificity=_ratio(tn, tn + fp), f1=f1,
                                 support=int(tp + fn))
    return ClassificationReport(n=n, accuracy=_ratio(np.trace(cm), n) or 0.0, classes=list(classes),
                                confusion_matrix=cm.tolist(), per_class=per, no_answer=n - int(cm.sum()))


def accuracy_drop_pp(before: ClassificationReport, after: ClassificationReport) -> dict[str, float | None]:
    """Per class: recall before minus recall after, in percentage points (None where undefined)."""
    out: dict[str, float | None] = {}
    for c in before.classes:
        b, a = before.per_class[c].recall, after.per_class[c].recall
        out[c] = None if a is None or b is None else 100.0 * (b - a)
    return out


def dangerous_flips(y_true: np.ndarray, y_clean: np.ndarray, y_adv: np.ndarray, classes: Sequence[str],
                    normal: int | None, emergency: Sequence[int] = ()) -> list[DangerousFlip] | None:
    """Findings the attack turned into normal: images of a finding class, correct before the
    attack, predicted as the ``normal`` class after it (a missed pneumothorax is a missed
    emergency: classes whose index is in ``emergency`` are marked so).

    ``normal`` is the index of the normal class (:func:`medrobust.data.class_names.find_normal_class`);
    None means there is none, and the flips are not assessed: the result is None, never an
    empty list that would read as "no flips".
    """
    if normal is None:
        return None
    y_true, y_clean, y_adv = (np.asarray(a) for a in (y_true, y_clean, y_adv))
    out = []
    for k, name in enumerate(classes):
        if k == normal:
            continue
        was_right = (y_true == k) & (y_clean == k)
        count = int((was_right & (y_adv == normal)).sum())
        out.append(DangerousFlip(true_class=name, predicted_class=classes[normal], count=count,
                                 rate=_ratio(count, int(was_right.sum())), emergency=k in set(emergency),
                                 n_correct=int(was_right.sum())))
    return out
