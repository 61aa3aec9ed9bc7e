"""Attack success: over all images, and over the images the model got right before the attack.

An untargeted attack succeeds on an image when the prediction after the attack differs from
the true label. Counting over all images mixes in the model's clean errors (an image already
misclassified "succeeds" for free); counting over the correctly classified ones isolates what
the attack did. Both are reported. A rate over no images is undefined and stays None (never
NaN, which strict JSON cannot hold, and never 0, which would read as "the attack failed").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class AttackSuccess:
    n_images: int
    n_correct_before: int
    clean_accuracy: float | None
    adversarial_accuracy: float | None
    success_rate_all: float | None  # fraction of all images misclassified after the attack
    success_rate_correct: float | None  # fraction of the correctly classified images flipped by the attack

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def attack_success(y_true: np.ndarray, y_clean: np.ndarray, y_adv: np.ndarray) -> AttackSuccess:
    """Success rates from true labels and predictions before/after (1-D integer arrays,
    or (N, K) 0/1 arrays for multi-label, where an image counts as correct when all findings are)."""
    y_true, y_clean, y_adv = (np.asarray(a) for a in (y_true, y_clean, y_adv))
    if not (len(y_true) == len(y_clean) == len(y_adv)):
        raise ValueError("labels and predictions must have the same length")
    def correct(pred: np.ndarray) -> np.ndarray:
        eq = pred == y_true
        return eq.reshape(len(eq), -1).all(axis=1)

    ok_clean = correct(y_clean)
    ok_adv = correct(y_adv)
    n = len(y_true)
    n_ok = int(ok_clean.sum())
    return AttackSuccess(
        n_images=n,
        n_correct_before=n_ok,
        clean_accuracy=float(ok_clean.mean()) if n else None,
        adversarial_accuracy=float(ok_adv.mean()) if n else None,
        success_rate_all=float((~ok_adv).mean()) if n else None,
        success_rate_correct=float((ok_clean & ~ok_adv).sum() / n_ok) if n_ok else None,
    )
