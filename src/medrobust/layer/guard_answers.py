"""What :meth:`Guard.predict <medrobust.layer.guard.Guard.predict>` answers: one
:class:`GuardAnswer` per image and the :class:`GuardResult` that holds them.

The decisions (DESIGN.md, "Guarded inference"):

* ``accept``: every step ran, every value was finite and no detector flagged the image;
* ``abstain``: a detector flagged the image and the guard abstains on a flag, or a step failed
  (an unreadable file, a non-finite value in the image or in an output, an exception from the
  model, the defense or a detector). The guard **fails closed**: an abstention never carries a
  label, neither the defended one nor the raw one, so a client that skips the decision cannot
  use a label the guard did not stand behind;
* ``warn``: a detector flagged the image and the guard warns on a flag; the labels are given.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

DECISIONS = ("accept", "abstain", "warn")
"""The decisions a guard gives, in the order :meth:`GuardResult.counts` lists them."""


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


@dataclass
class GuardAnswer:
    """The guard's answer on one image.

    Args:
        id: the image's file name (its path relative to the folder given), or its index for
            arrays and tensors.
        decision: ``"accept"``, ``"abstain"`` or ``"warn"`` (module docstring).
        reason: why it was not accepted (the detectors that flagged it, with score and
            threshold, or the step that failed); ``""`` when accepted.
        label: the class after the defense (multi-label: the findings joined by ``|``, or
            ``"none"``); None on an abstention. Default None.
        probabilities: class -> probability after the defense; None on an abstention. Default None.
        undefended_label: the class the bare model gives the image as received; None on an
            abstention. Default None.
        scores: detector -> suspicion score on the image as received (None where it could not
            be computed). Default: empty.
        thresholds: detector -> the threshold its score is compared with. Default: empty.
        flagged: whether any detector flagged the image. Default False.
    """

    id: str
    decision: str
    reason: str = ""
    label: str | None = None
    probabilities: dict[str, float] | None = None
    undefended_label: str | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    thresholds: dict[str, float | None] = field(default_factory=dict)
    flagged: bool = False

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"a guard's decision is one of {', '.join(DECISIONS)}, got {self.decision!r}")

    def to_dict(self) -> dict[str, Any]:
        """The answer as plain JSON types (strict JSON: a value that is not finite becomes None).

        Returns:
            ``{"id", "decision", "reason", "label", "probabilities", "undefended_label", "scores",
            "thresholds", "flagged"}``.
        """
        return {"id": self.id, "decision": self.decision, "reason": self.reason, "label": self.label,
                "probabilities": None if self.probabilities is None
                else {k: _finite_or_none(v) for k, v in self.probabilities.items()},
                "undefended_label": self.undefended_label,
                "scores": {k: _finite_or_none(v) for k, v in self.scores.items()},
                "thresholds": {k: _finite_or_none(v) for k, v in self.thresholds.items()},
                "flagged": bool(self.flagged)}


def failed_answer(image_id: str, reason: str, scores: dict[str, float | None] | None = None,
                  thresholds: dict[str, float | None] | None = None) -> GuardAnswer:
    """An abstention because a step failed on the image: no label, the reason said.

    Args:
        image_id: the image's id.
        reason: what failed, in one sentence.
        scores: the detector scores computed before the failure. Default None: none.
        thresholds: the detectors' thresholds. Default None: none.

    Returns:
        The :class:`GuardAnswer` (``decision="abstain"``, ``flagged=False``).
    """
    return GuardAnswer(id=image_id, decision="abstain", reason=reason, scores=dict(scores or {}),
                       thresholds=dict(thresholds or {}))


@dataclass
class GuardResult:
    """The guard's answers on images, in the order the images were given (unreadable files
    among them, each with its abstention).

    Args:
        answers: one :class:`GuardAnswer` per image.
    """

    answers: list[GuardAnswer]

    def __len__(self) -> int:
        return len(self.answers)

    def __iter__(self) -> Iterator[GuardAnswer]:
        return iter(self.answers)

    def __getitem__(self, index: int) -> GuardAnswer:
        return self.answers[index]

    def counts(self) -> dict[str, int]:
        """How many images got each decision.

        Returns:
            ``{"accept": n, "abstain": n, "warn": n}`` (every decision, zeros included).
        """
        seen = Counter(a.decision for a in self.answers)
        return {d: int(seen.get(d, 0)) for d in DECISIONS}

    def to_dicts(self) -> list[dict[str, Any]]:
        """Every answer as plain JSON types.

        Returns:
            One :meth:`GuardAnswer.to_dict` per image, in order.
        """
        return [a.to_dict() for a in self.answers]
