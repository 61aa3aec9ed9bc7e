"""The adaptive attacker's portfolio: which attacks try to break a defense, and the rules that
decide how long they try. Plain data and pure functions; :mod:`medrobust.evaluation.stages.adaptive`
runs them.

What a preprocessing defense wins back is only honest against the strongest attacker who knows
it (Athalye, Carlini & Wagner, ICML 2018; Carlini et al. 2019, "On Evaluating Adversarial
Robustness"), and one attack is rarely the strongest on every image: AutoAttack (Croce & Hein,
ICML 2020) reports the worst case over an ensemble. So the adaptive stage runs every member of
the portfolio and counts an image as robust only when the defended model is right on it clean
and under every member's images (the union of the members' successes, per image)::

    robust_i  = [D-model right on x_i] AND  AND_{member m, run r of m} [D-model right on x_adv_{m,r,i}]
    worst-case accuracy = mean_i robust_i

Members (``adaptive.portfolio``; the gradient members run ``adaptive.attack``, PGD by default):

``unrolled``  gradients exact through every member of the defense that has them, TV's solver
              unrolled (even where it is configured without), BPDA with the identity only where
              none exists (JPEG, bit depth's straight-through estimate, TVM's mask);
``smooth``    the same, with JPEG's backward pass through a differentiable JPEG (Shin & Song
              2017) instead of the identity; run only when the defense holds a member with such
              an approximation;
``bpda``      BPDA with the identity through the whole defense (Athalye et al.'s first tool);
              run only when it differs from ``unrolled`` (a member has exact gradients);
``square``    Square (Andriushchenko et al., ECCV 2020) on the defended model: queries only, no
              gradients, so gradient masking cannot stop it;
``transfer``  the white-box attacks' images crafted on the undefended model at the same budget,
              through the defense (free: the non-adaptive stage has them).

How long the gradient members try is checked, not assumed:

* **EOT** (randomised defenses, e.g. TVM): the first gradient member runs with ``n`` draws and
  ``2n``; the draws double until the last doubling changed accuracy by no more than the test
  set's noise (:func:`accuracy_noise`: one binomial standard error, at least one image), up to
  ``max_eot_samples``;
* **steps**: the first gradient member runs with ``T`` steps and ``2T``, doubling until the last
  doubling changed accuracy by at most one image, up to ``max_steps``; every run counts in the
  union, and the other gradient members run with the steps reached;
* **restarts**: the first gradient member runs ``restarts`` times from different random starts.

Gradient masking (Athalye et al. 2018, sec. 3; Carlini et al. 2019, sec. 5) is flagged, never
silently absorbed: the report says "possible gradient masking: the adaptive figure may be
optimistic" beside the number when a gradient-free or transfer member beats the best gradient
member, or when the first gradient member at ``masking_eps`` (64/255 of the range the model sees:
of an 8-bit image, or of a CT model's widest window,
:func:`~medrobust.evaluation.budget_units.masking_budget_for_data`; with the steps and draws its
checks reached) leaves any image right.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MEMBERS = ("unrolled", "smooth", "bpda", "square", "transfer")
GRADIENT_MEMBERS = ("unrolled", "smooth", "bpda")
PRESET_PORTFOLIOS = {"quick": ("unrolled", "transfer"), "standard": MEMBERS, "thorough": MEMBERS}

MEMBER_DESCRIPTIONS = {
    "unrolled": "exact gradients where the defense has them (TV unrolled), BPDA elsewhere",
    "smooth": "as unrolled, with JPEG differentiated through a smooth JPEG (Shin & Song 2017)",
    "bpda": "BPDA with the identity through the whole defense",
    "square": "Square, queries to the defended model only",
    "transfer": "crafted on the undefended model, then defended",
}


def check_portfolio(names: list[str]) -> list[str]:
    """The portfolio's member names, checked: known, at least one, no repeats."""
    unknown = [n for n in names if n not in MEMBERS]
    if unknown:
        raise ValueError(f"unknown adaptive portfolio member(s) {unknown}; choose from {', '.join(MEMBERS)}")
    if not names:
        raise ValueError(f"the adaptive portfolio is empty; list at least one of {', '.join(MEMBERS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"the adaptive portfolio lists a member twice: {names}")
    return list(names)


def worst_case(clean_right: np.ndarray, member_right: dict[str, list[np.ndarray]]) -> tuple[np.ndarray, dict[str, float]]:
    """The union of the members' successes, per image: ``(robust, accuracy by member)``.

    ``clean_right``: (n,) whether the defended model is right on each clean image;
    ``member_right``: {member: [(n,) right under one run's images, ...]}. An image is robust when
    it is right clean and under every run of every member, so an image fooled by several members
    (or runs) counts once; a member's accuracy is the fraction right under all of its runs."""
    robust = np.asarray(clean_right, dtype=bool).copy()
    accuracy = {}
    for name, runs in member_right.items():
        right = np.logical_and.reduce([np.asarray(r, dtype=bool) for r in runs]) if runs else np.ones_like(robust)
        accuracy[name] = float(right.mean()) if len(right) else float("nan")
        robust &= right
    return robust, accuracy


def accuracy_noise(accuracy: float, n: int) -> float:
    """The test set's noise on an accuracy: one binomial standard error ``sqrt(p (1 - p) / n)``,
    never below one image (``1 / n``)."""
    if n <= 0:
        return 1.0
    return max(math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / n), 1.0 / n)


@dataclass(frozen=True)
class DoublingCheck:
    """A quantity (steps, EOT draws) doubled until the last doubling changed accuracy by at most
    ``tolerance``: ``values`` tried and ``accuracies`` measured, in order."""

    quantity: str
    values: tuple[int, ...]
    accuracies: tuple[float, ...]
    tolerance: float
    limit: int

    @property
    def converged(self) -> bool:
        return len(self.accuracies) >= 2 and abs(self.accuracies[-1] - self.accuracies[-2]) <= self.tolerance + 1e-12

    def next_value(self) -> int | None:
        """The next value to try, or None when converged or at the limit."""
        if len(self.values) >= 2 and self.converged:
            return None
        following = self.values[-1] * 2
        return following if following <= self.limit else None

    def text(self) -> str:
        """E.g. "steps 10 -> 20 -> 40: 33.3% -> 28.3% -> 28.3% (converged: last change 0.0 points,
        tolerance 1.7)"."""
        values = " -> ".join(str(v) for v in self.values)
        accs = " -> ".join(f"{100 * a:.1f}%" for a in self.accuracies)
        if len(self.accuracies) < 2:
            return f"{self.quantity} {values}: {accs} (not checked: the limit {self.limit} allows no doubling)"
        change = 100 * abs(self.accuracies[-1] - self.accuracies[-2])
        verdict = "converged" if self.converged else f"NOT converged at the limit {self.limit}"
        return (f"{self.quantity} {values}: {accs} ({verdict}: last change {change:.1f} points, "
                f"tolerance {100 * self.tolerance:.1f})")


def double_until_converged(quantity: str, start: int, limit: int, measure: Callable[[int], float],
                           tolerance: Callable[[float], float]) -> DoublingCheck:
    """Measure accuracy at ``start``, ``2 start``, ... (``measure(value)``) until the last
    doubling changed it by at most ``tolerance(latest accuracy)`` or the next value would pass
    ``limit``; returns the check with every value and accuracy."""
    values, accuracies = [start], [measure(start)]
    while True:
        check = DoublingCheck(quantity, tuple(values), tuple(accuracies), tolerance(accuracies[-1]), limit)
        following = check.next_value()
        if following is None:
            return check
        values.append(following)
        accuracies.append(measure(following))


def masking_reasons(gradient_accuracy: float | None, other: dict[str, float], high_eps_accuracy: float | None,
                    high_eps_label: str, n: int) -> list[str]:
    """Why the adaptive figure may be optimistic (empty: no sign of gradient masking seen).

    ``gradient_accuracy``: the best (lowest) accuracy of a gradient member (None: none ran);
    ``other``: gradient-free and transfer members' accuracies by name; ``high_eps_accuracy``: the
    first gradient member's accuracy at the large budget ``high_eps_label`` (None: not run)."""
    reasons = []
    if gradient_accuracy is not None:
        for name, acc in other.items():
            if acc < gradient_accuracy:
                reasons.append(f"{name} ({100 * acc:.1f}%) beat the best gradient attack ({100 * gradient_accuracy:.1f}%), "
                               f"{round((gradient_accuracy - acc) * n)} image(s) more")
    if high_eps_accuracy is not None and high_eps_accuracy > 0:
        reasons.append(f"accuracy stays at {100 * high_eps_accuracy:.1f}% at eps {high_eps_label}, where any defense "
                       "that keeps images recognisable should fall to 0%")
    return reasons
