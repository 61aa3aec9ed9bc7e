"""Attack success: over all images, and over the images the model got right before the attack.

The rule, per image (:func:`attack_succeeded`), with ``y`` the true labels (untargeted) or the
target labels (targeted):

* one label per image (softmax, binary): untargeted ``pred != y``; targeted ``pred == y``;
* multi-label (``(N, K)`` 0/1 decisions): untargeted, *any* finding's decision differs from
  ``y``; targeted, *every* finding has the wanted decision. ``findings`` (column indices, the
  attack's named findings) restricts both to those columns.

Counting over all images mixes in the model's clean errors (an image already misclassified
"succeeds" for free); counting over the images on which the rule did not already hold before the
attack (untargeted: the correctly classified ones) isolates what the attack did. Both are
reported. A rate over no images is undefined and stays None (never NaN, which strict JSON cannot
hold, and never 0, which would read as "the attack failed").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class AttackSuccess:
    n_images: int
    n_correct_before: int
    clean_accuracy: float | None
    adversarial_accuracy: float | None
    success_rate_all: float | None  # fraction of all images on which the attack succeeded (untargeted: misclassified)
    success_rate_correct: float | None  # the same over the images on which it had not already succeeded before

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def attack_succeeded(y: np.ndarray, pred: np.ndarray, *, targeted: bool = False,
                     findings: Sequence[int] | None = None) -> np.ndarray:
    """(N,) bool: the success rule of the module docstring, per image.

    ``y`` and ``pred``: (N,) labels, or (N, K) 0/1 decisions for a multi-label model;
    ``findings`` restricts a multi-label rule to those columns.
    """
    y, pred = np.asarray(y), np.asarray(pred)
    if y.shape != pred.shape:
        raise ValueError(f"predictions {pred.shape} and labels {y.shape} differ in shape")
    if findings is not None:
        if y.ndim != 2:
            raise ValueError(f"findings select columns of (N, K) multi-label decisions, got labels of shape {y.shape}")
        y, pred = y[:, list(findings)], pred[:, list(findings)]
    hit = _all_equal(pred, y)
    return hit if targeted else ~hit


def attack_success(y_true: np.ndarray, y_clean: np.ndarray, y_adv: np.ndarray, *, targeted: bool = False,
                   findings: Sequence[int] | None = None) -> AttackSuccess:
    """Success rates from labels and predictions before/after (1-D integer arrays, or (N, K) 0/1
    arrays for multi-label, where an image counts as correct when all findings are).

    ``targeted``: ``y_true`` holds the target labels, and "correct before" means "not already at
    the target". ``findings``: the multi-label columns the attack aimed at. The accuracies always
    compare every finding with ``y_true``.
    """
    y_true, y_clean, y_adv = (np.asarray(a) for a in (y_true, y_clean, y_adv))
    if not (len(y_true) == len(y_clean) == len(y_adv)):
        raise ValueError("labels and predictions must have the same length")
    before = attack_succeeded(y_true, y_clean, targeted=targeted, findings=findings)
    after = attack_succeeded(y_true, y_adv, targeted=targeted, findings=findings)
    n = len(y_true)
    n_ok = int((~before).sum())
    return AttackSuccess(
        n_images=n,
        n_correct_before=n_ok,
        clean_accuracy=float(_all_equal(y_clean, y_true).mean()) if n else None,
        adversarial_accuracy=float(_all_equal(y_adv, y_true).mean()) if n else None,
        success_rate_all=float(after.mean()) if n else None,
        success_rate_correct=float((~before & after).sum() / n_ok) if n_ok else None,
    )


def _all_equal(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N,) bool: the image's label, or every one of its findings, equals ``y``'s."""
    eq = np.asarray(pred == y)
    return eq.all(axis=tuple(range(1, eq.ndim))) if eq.ndim > 1 else eq
