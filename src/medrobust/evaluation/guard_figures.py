"""The guard stage's figures from its per-image judgements: pure functions of arrays.

Per image and member image, the guard either **accepts** it (no detector flagged it and every
step ran) or not (flagged, or failed closed); an accepted image is labelled right or wrong. The
attacker **evades** the guard on an image when the guard accepts the image it sent and labels it
wrong. Over a portfolio of members (the image unchanged, the non-adaptive attacks' images, the
guard-aware runs at each lambda), the worst case per image is the attacker's best outcome, in
this order (Carlini & Wagner 2017; the portfolio rule of
:mod:`medrobust.evaluation.adaptive_portfolio`)::

    evaded  (some member's image accepted and labelled wrong)
    > rejected (no member evaded, some member's image flagged or failed: no answer is given or
               the answer is flagged; the attack was at least noticed)
    > accepted and right (every member's image accepted with the right label)

so ``evasion + correct accepted + rejected = 1`` at every budget. Undefined figures (accuracy on
accepted images when none was accepted) are None with the reason, never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medrobust.evaluation.results import GuardBudget, GuardClean, GuardMember

DEFINITION = ("Guarded model: a defense and calibrated detectors in front of the model, as mr.guard serves it; the "
              "attacker knows both (Carlini & Wagner 2017: the classification loss plus lambda x each detector's score "
              "over its threshold, through the defense's gradient routes). Evasion rate = attacked images the guard "
              "accepts (no detector flags them) and labels wrong, over attacked images, worst case per image over the "
              "attacker's portfolio; the row's accuracy at a budget is 1 - evasion rate (an image counts as withstood "
              "when the guard labels it right or refuses it). Clean abstention rate = clean images the guard gives no "
              "label for: its cost.")


@dataclass(frozen=True)
class Judged:
    """The guard's judgement of one set of images: per image, the label right, flagged by a
    detector, failed closed (a value that is not finite)."""

    right: np.ndarray
    flagged: np.ndarray
    failed: np.ndarray

    @classmethod
    def of(cls, summary: dict[str, np.ndarray], labels: np.ndarray) -> "Judged":
        """From a guard unit's stage summary (``pred``, ``flagged``, ``failed``) and the labels."""
        pred, labels = np.asarray(summary["pred"]), np.asarray(labels)
        right = (pred == labels) if pred.ndim == 1 else (pred == labels).all(axis=1)
        return cls(right=right.astype(bool), flagged=np.asarray(summary["flagged"], dtype=bool),
                   failed=np.asarray(summary["failed"], dtype=bool))

    @property
    def accepted(self) -> np.ndarray:
        return ~self.flagged & ~self.failed

    @property
    def evaded(self) -> np.ndarray:
        return self.accepted & ~self.right

    def abstained(self, on_flag: str) -> np.ndarray:
        return self.failed | (self.flagged if on_flag == "abstain" else np.zeros_like(self.flagged))


def _accuracy_on_accepted(right_accepted: int, accepted: int, what: str) -> tuple[float | None, str]:
    if accepted == 0:
        return None, f"not assessed: the guard accepted no {what} image"
    return right_accepted / accepted, f"{right_accepted / accepted:.1%} ({right_accepted} of {accepted} accepted)"


def clean_figures(judged: Judged, on_flag: str) -> GuardClean:
    """The guard's cost on clean images: flagged and abstained rates, accuracy on the accepted."""
    n = len(judged.right)
    accepted = int(judged.accepted.sum())
    right = int((judged.accepted & judged.right).sum())
    acc, text = _accuracy_on_accepted(right, accepted, "clean")
    return GuardClean(n=n, flagged_rate=float(judged.flagged.mean()) if n else 0.0,
                      abstained_rate=float(judged.abstained(on_flag).mean()) if n else 0.0, accepted=accepted,
                      accuracy_on_accepted=acc, accuracy_on_accepted_text=text, accuracy=right / n if n else 0.0)


@dataclass(frozen=True)
class MemberRuns:
    """One member at one budget: its runs' judgements (several runs: several attacks' images),
    or why it did not run."""

    name: str
    description: str
    runs: list[tuple[str, Judged]]
    not_run: str | None = None


def worst_case(eps: float, members: list[MemberRuns], on_flag: str) -> GuardBudget:
    """The guard's figures at one budget, worst case per image over ``members`` (module docstring)."""
    sets = [(m.name, key, j) for m in members for key, j in m.runs]
    n = len(sets[0][2].right) if sets else 0
    evaded = np.zeros(n, dtype=bool)
    rejected = np.zeros(n, dtype=bool)
    chosen: list[int | None] = [None] * n  # per image, the set that decides it
    for k, (_, _, j) in enumerate(sets):
        for i in np.flatnonzero(j.evaded & ~evaded):
            chosen[i] = k
        evaded |= j.evaded
    for k, (_, _, j) in enumerate(sets):
        for i in np.flatnonzero(~j.accepted & ~evaded & ~rejected):
            chosen[i] = k
        rejected |= ~j.accepted & ~evaded
    flagged = np.array([bool(sets[k][2].flagged[i]) if k is not None else False for i, k in enumerate(chosen)], bool)
    abstained = np.array([bool(sets[k][2].abstained(on_flag)[i]) if k is not None else False
                          for i, k in enumerate(chosen)], bool)
    correct = ~evaded & ~rejected
    accepted = int((evaded | correct).sum())
    acc, text = _accuracy_on_accepted(int(correct.sum()), accepted, "attacked")
    out_members = []
    for m in members:
        if m.not_run is not None or not m.runs:
            out_members.append(GuardMember(name=m.name, description=m.description, evasion_rate=None,
                                           not_run=m.not_run or "not run"))
            continue
        m_evaded = np.logical_or.reduce([j.evaded for _, j in m.runs])
        m_flagged = np.logical_or.reduce([j.flagged for _, j in m.runs])
        m_accepted = np.logical_and.reduce([j.accepted for _, j in m.runs])
        m_right = int((m_accepted & ~m_evaded).sum())
        won = sum(1 for i, k in enumerate(chosen) if k is not None and evaded[i] and sets[k][0] == m.name)
        out_members.append(GuardMember(
            name=m.name, description=m.description, evasion_rate=float(m_evaded.mean()) if n else 0.0,
            flagged_rate=float(m_flagged.mean()) if n else 0.0, accepted=int(m_accepted.sum()),
            accuracy_on_accepted=m_right / int(m_accepted.sum()) if m_accepted.any() else None,
            evaded=int(m_evaded.sum()), won=won, runs=[key for key, _ in m.runs]))

    def rate(a: np.ndarray) -> float:
        return float(a.mean()) if n else 0.0

    return GuardBudget(eps=eps, n=n, evasion_rate=rate(evaded), correct_accepted_rate=rate(correct),
                       flagged_rate=rate(flagged), abstained_rate=rate(abstained), rejected_rate=rate(rejected),
                       accepted=accepted, accuracy_on_accepted=acc, accuracy_on_accepted_text=text,
                       members=out_members)
