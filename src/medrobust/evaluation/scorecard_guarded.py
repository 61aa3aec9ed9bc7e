"""The scorecard's guarded-model rows (:mod:`medrobust.evaluation.scorecard`): the guard the run's
``guard`` stage evaluated (:mod:`medrobust.evaluation.stages.guard`), one row per threat model
it was measured against — ``guarded`` (the guard-aware white-box attacker's worst case) and
``guarded-transfer`` (a surrogate's transfer images through the guard).

A guarded row's accuracy at a budget is ``1 - evasion rate``: the attacked images the attacker
did **not** get accepted and labelled wrong (the guard labelled them right, or refused them);
its clean value likewise (the guard's own accepted mistakes on clean images). Its cost is beside
it: the clean abstention rate. Like the defended rows, a guarded row never enters the overall
score, which is the undefended model's.
"""

from __future__ import annotations

from collections.abc import Callable

from medrobust.evaluation.results import GuardBudget, GuardOutcome
from medrobust.evaluation.scorecard_schema import ThreatRow
from medrobust.specs.components import eps_label

GUARDED_DEFINITION = ("Guarded model = the defense and calibrated detectors in front of the model, as mr.guard serves "
                      "it (the run's guard stage). Its accuracy at a budget = 1 - the evasion rate: the fraction of "
                      "attacked images the attacker did not get accepted (unflagged) and labelled wrong, worst case "
                      "per image over the guard-aware attacker's portfolio (Carlini & Wagner 2017: the loss plus "
                      "lambda x each detector's score over its threshold, through the defense's gradient routes); "
                      "a refused image counts as withstood, so the clean abstention rate beside it is the guard's "
                      "cost. Never part of the overall score.")


def guard_name(guard: GuardOutcome) -> str:
    """``jpeg:quality=75+tv + squeeze``: the guard's defense and detectors."""
    return " + ".join([guard.defense or "no defense", *guard.detectors]) or "guard"


def guarded_rows(guard: GuardOutcome | None, n: int, row: Callable[..., ThreatRow]) -> list[ThreatRow]:
    """The guarded rows (module docstring); ``row`` builds a row as the scorecard's others are
    (``_row(threat_model, label, clean, n, points, main_eps, strongest, ...)``, partially applied)."""
    if guard is None:
        return []
    clean = 1.0 - _clean_evasion(guard)
    rows = []
    # a guard whose guard-aware members could not run (a black box) faced the attacks on the undefended model and,
    # where the defense's portfolio ran Square, Square's queries through the defense: none aims at the detectors
    queried = guard.queried_through_defense
    attacker = (("undefended model's and Square-through-the-defense attack images" if queried else
                 "undefended model's attack images") + " (guard-aware attacker not run)") if guard.not_run else \
        "guard-aware attacker (worst case)"
    for threat, label, budgets in [("guarded", f"{guard_name(guard)}, {attacker}", guard.budgets),
                                   *[("guarded-transfer", f"{guard_name(guard)}, transfer attacker from {source}",
                                      points) for source, points in guard.transfer.items()]]:
        if not budgets:
            continue
        points = [(b.eps, 1.0 - b.evasion_rate, f"{label.split(', ')[1]}@{eps_label(b.eps)}") for b in budgets]
        built = row(threat, label, clean, n, points, max(b.eps for b in budgets))
        built.clean_abstention_rate = guard.clean.abstained_rate
        built.evasion_by_budget = {eps_label(b.eps): b.evasion_rate for b in budgets}
        if threat == "guarded" and guard.not_run:
            built.warning = (f"the guard-aware members were {guard.not_run}: " + (
                "the unchanged images, the non-adaptive ones and Square's queries through the defense went through "
                "the guard; none aims at the detectors, so an attacker who does may evade more" if queried else
                "only the unchanged and non-adaptive images went through the guard, so this row may read better than "
                "the defense's adaptive row"))
        rows.append(built)
    return rows


def _clean_evasion(guard: GuardOutcome) -> float:
    """Clean images the guard accepts and labels wrong, over clean images."""
    c = guard.clean
    wrong_accepted = c.accepted - round(c.accuracy * c.n)
    return wrong_accepted / c.n if c.n else 0.0


def budget_line(b: GuardBudget) -> str:
    """One budget in words: evasion, flagged, abstained and the accuracy on accepted images."""
    return (f"{eps_label(b.eps)}: evasion {b.evasion_rate:.1%}, flagged {b.flagged_rate:.1%}, abstained "
            f"{b.abstained_rate:.1%}, accuracy on accepted {b.accuracy_on_accepted_text}")
