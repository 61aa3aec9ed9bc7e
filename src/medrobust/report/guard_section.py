"""The guard in the report: the section of report.html on the guard the run's ``guard`` stage
attacked (its evasion, flagged and abstained rates and the accuracy on the images it accepts,
per budget, and its clean cost), and the statement's sentence on what it was evaluated against.
Every number is read from ``metrics.json`` (:class:`~medrobust.evaluation.results.GuardOutcome`)."""

from __future__ import annotations

from html import escape

from medrobust.evaluation.results import GuardBudget, GuardOutcome
from medrobust.evaluation.scorecard_guarded import guard_name
from medrobust.report.run_contents import format_eps, pct
from medrobust.report.tables import table


def _budget_rows(budgets: list[GuardBudget]) -> list[list[str]]:
    rows = []
    for b in budgets:
        won = ", ".join(f"{m.name} {m.won}" for m in b.members if m.won) or "none"
        rows.append([format_eps(b.eps), pct(b.evasion_rate), pct(b.flagged_rate), pct(b.abstained_rate),
                     b.accuracy_on_accepted_text, won])  # table() escapes every cell
    return rows


def guard_section(guard: GuardOutcome | None) -> str:
    """report.html's guard section: the per-budget table, the members, the clean cost."""
    if guard is None:
        return ('<p class="note">This run has no guard stage (configure <code>guard:</code>, or '
                "<code>medrobust evaluate --guard</code>).</p>")
    c = guard.clean
    thresholds = "; ".join(f"{escape(name)} {escape(', '.join(f'{k} {v:.4g}' for k, v in t.items()))}"
                           for name, t in guard.thresholds.items()) or "none"
    parts = [f"<p>The guard <b>{escape(guard_name(guard))}</b> (on a flag: {escape(guard.on_flag)}; thresholds "
             f"{thresholds}, calibrated on {escape(guard.calibration)}) against {escape(guard.attacker)}.</p>",
             f"<p><b>Clean cost:</b> the guard abstains on {pct(c.abstained_rate)} of the {c.n} clean images "
             f"(flags {pct(c.flagged_rate)}); accuracy on the clean images it accepts: "
             f"{escape(c.accuracy_on_accepted_text)}.</p>",
             table(["budget", "evasion (accepted and wrong)", "flagged", "abstained", "accuracy on accepted",
                    "images won by"], _budget_rows(guard.budgets))]
    if guard.not_run:
        parts.append(f'<p class="warning">The guard-aware members were {escape(guard.not_run)}.</p>')
    for b in guard.budgets:
        rows = [[m.name, m.description, f"not run: {m.not_run}" if m.evasion_rate is None
                 else pct(m.evasion_rate), "" if m.flagged_rate is None else pct(m.flagged_rate),
                 "not assessed (none accepted)" if m.accuracy_on_accepted is None and m.evasion_rate is not None
                 else "" if m.accuracy_on_accepted is None else pct(m.accuracy_on_accepted)] for m in b.members]
        parts += [f"<h3>Members at {format_eps(b.eps)}</h3>",
                  table(["member", "what", "evasion", "flagged", "accuracy on accepted"], rows)]
    for source, budgets in guard.transfer.items():
        parts += [f"<h3>Transfer images from {escape(source)} through the guard</h3>",
                  table(["budget", "evasion (accepted and wrong)", "flagged", "abstained", "accuracy on accepted",
                         "images won by"], _budget_rows(budgets))]
    parts.append(f'<p class="note">{escape(guard.definition)}</p>')
    return "\n".join(parts)


def guard_statement(guard: GuardOutcome | None) -> str:
    """The statement's sentence on the guard (empty without one)."""
    if guard is None:
        return ""
    lams = ", ".join(f"{lam:g}" for lam in guard.lambdas)
    budgets = ", ".join(format_eps(b.eps) for b in guard.budgets) or "no budget"
    worst = max(guard.budgets, key=lambda b: b.eps) if guard.budgets else None
    evasion = f"; at {format_eps(worst.eps)} its evasion rate is {pct(worst.evasion_rate)}" if worst else ""
    return (f"<p>The guard {escape(guard_name(guard))} (on a flag: {escape(guard.on_flag)}) was evaluated as served "
            f"against Carlini &amp; Wagner's guard-aware attacker (PGD, {guard.steps} steps, detector weights lambda in "
            f"{{{lams}}}, through the defense's gradient routes) beside the non-adaptive images, worst case per image, "
            f"at L-inf budgets {budgets}{evasion}; its clean cost is an abstention on {pct(guard.clean.abstained_rate)} "
            f"of {guard.clean.n} clean images.</p>")
