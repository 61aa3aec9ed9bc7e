"""HTML tables of the report: classification reports, attacks, defenses, detectors, settings.

Every cell is escaped; numbers come straight from the result types, formatted once here
(fractions as percentages with one decimal, drops and recoveries in points)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

from medrobust.evaluation.certified_accuracy import largest_certifiable_radius
from medrobust.evaluation.classification import NOT_ASSESSED_NO_NORMAL
from medrobust.evaluation.evaluation_checks import MASKING_MOOT, MASKING_NOT_ASSESSED, MASKING_WARNING
from medrobust.evaluation.results import (
    AttackOutcome,
    CertifiedFigure,
    ClassificationReport,
    DefenseOutcome,
    DetectorOutcome,
    ModelChecks,
    SweepPoint,
)
from medrobust.report.run_contents import format_eps, pct, visible_budget
from medrobust.specs.components import HU_LEVELS


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], css_class: str = "") -> str:
    """An HTML table; cells are escaped unless they are :class:`Raw`."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    cls = f' class="{css_class}"' if css_class else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"


class Raw(str):
    """Cell content that is already HTML."""


def _cell(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return escape(json.dumps(value, default=str))
    return escape(str(value))


def key_values(values: dict[str, Any]) -> str:
    if not values:
        return '<p class="note">Not recorded.</p>'
    return table(["field", "value"], [[k, v] for k, v in values.items()], "kv")


def classification(report: ClassificationReport) -> str:
    rows = [[c, pct(m.precision), pct(m.recall), pct(m.specificity), "n/a" if m.f1 is None else f"{m.f1:.3f}",
             m.support] for c, m in report.per_class.items()]
    rows.append([Raw("<b>all</b>"), "", Raw(f"<b>accuracy {pct(report.accuracy)}</b>"), "", "", report.n])
    return table(["class", "precision", "sensitivity (recall)", "specificity", "F1", "images"], rows)


def flips_text(attack: AttackOutcome) -> str:
    """The dangerous flips of one attack in a few words: "not assessed: ..." when no class is
    normal, "none" only when they were assessed and none happened."""
    if attack.dangerous_flips is None:
        return NOT_ASSESSED_NO_NORMAL
    flips = [f for f in attack.dangerous_flips if f.count > 0]
    if not flips:
        return "none"
    return "; ".join(f"{f.count} {f.true_class} -> {f.predicted_class} ({pct(f.rate)})"
                     + (" EMERGENCY" if f.emergency else "") for f in flips)


def success_correct_text(attack: AttackOutcome) -> str:
    """The success rate over correctly classified images, or why it is not defined."""
    if attack.success_rate_correct is None:
        return "not defined (0 correctly classified images)"
    return pct(attack.success_rate_correct)


def eps_text(eps: float, unit: str = "grey levels") -> str:
    """A budget in the data's unit (``8/255``, CT ``4 HU``), marked "visible" above 16/255 on 8-bit data."""
    if unit == "HU":
        return format_eps(eps, unit)
    return format_eps(eps) + (" (visible)" if visible_budget(eps) else "")


def attacks(outcomes: list[AttackOutcome], unit: str = "grey levels") -> str:
    """The attacks table; the L-inf change in the data's unit (grey levels of 255, or HU on CT)."""
    levels, linf_unit = (HU_LEVELS, "HU") if unit == "HU" else (255, "of 255")
    rows = []
    for a in outcomes:
        p = a.perturbation
        rows.append([a.key, a.source, eps_text(a.eps, unit), a.adversarial.n,
                     Raw(f"{pct(a.clean.accuracy)} &rarr; <b>{pct(a.adversarial.accuracy)}</b>"),
                     pct(a.success_rate_all), success_correct_text(a),
                     f"{levels * p.linf_mean:.2f} / {levels * p.linf_max:.2f}", f"{p.l2_mean:.3f}", f"{p.ssim_mean:.3f}",
                     "∞ (unchanged)" if p.psnr_mean_db is None else f"{p.psnr_mean_db:.1f}", flips_text(a),
                     f"{a.seconds_per_image:.3g}"])
    return table(["attack", "source", "eps", "images", "accuracy clean → attacked", "success (all)",
                  "success (correct)", f"L-inf mean / max ({linf_unit})", "L2 mean", "SSIM mean", "PSNR (dB)",
                  "dangerous flips (finding → normal)", "s / image"], rows, "wide")


def attack_params(outcomes: list[AttackOutcome]) -> str:
    return table(["attack", "parameters"], [[a.key, a.params] for a in outcomes], "wide")


def sweeps(values: dict[str, list[SweepPoint]], unit: str = "grey levels") -> str:
    rows = [[name, Raw(", ".join(f"{escape(eps_text(p.eps, unit))}: <b>{pct(p.accuracy)}</b>"
                                 for p in sorted(points, key=lambda p: p.eps)))]
            for name, points in values.items()]
    return table(["attack", "accuracy at each eps"], rows, "wide")


def _adaptive_accuracy(d: DefenseOutcome) -> Raw:
    """The worst-case accuracy, with the gradient-masking flag beside it when one was raised."""
    cell = f"<b>{escape(pct(d.adaptive_accuracy))}</b>"
    if d.masking_flagged:
        cell += f'<br><span class="warning">{escape(MASKING_WARNING)}</span>'
    elif not d.gradient_masking_assessed:
        cell += f'<br><span class="na">{escape(MASKING_NOT_ASSESSED)}</span>'
    return Raw(cell)


def defenses(outcomes: list[DefenseOutcome]) -> str:
    rows = []
    for d in outcomes:
        non_adaptive = "; ".join(f"{k}: {pct(v)} ({d.non_adaptive_recovery_pp.get(k, float('nan')):+.1f} pp)"
                                 for k, v in d.non_adaptive.items())
        rows.append([d.name, pct(d.clean.accuracy), f"{d.clean_cost_pp:+.1f}", non_adaptive, d.adaptive_attack,
                     _adaptive_accuracy(d), f"{d.adaptive_recovery_pp:+.1f}", d.gradient_mode,
                     f"{d.seconds_per_image:.3g}"])
    return table(["defense", "clean accuracy", "clean cost (pp)", "attacker ignores it: accuracy (recovery)",
                  "adaptive attacker", "adaptive accuracy (worst case)", "adaptive recovery (pp)", "members (route)",
                  "s / image"], rows, "wide")


def adaptive_portfolio(d: DefenseOutcome, unit: str = "grey levels") -> str:
    """One defense's adaptive portfolio: each member's own accuracy beside the worst case, the
    doubling checks and the gradient-masking verdict with its reasons."""
    def accuracy(m) -> Any:
        return pct(m.accuracy) if m.accuracy is not None else Raw(f'<span class="na">{escape(m.not_run or "not run")}</span>')

    rows = [[m.name, m.description, accuracy(m), "gradients" if m.gradient_based else "no gradients",
             f"{m.seconds_per_image:.3g}"] for m in d.adaptive_members]
    rows.append([Raw("<b>worst case</b>"), "right clean and under every member above, per image",
                 _adaptive_accuracy(d), "", ""])
    parts = [table(["member", "what ran", "accuracy through the defense", "kind", "s / image"], rows, "wide")]
    items = [escape(c.text) if c.converged else f'<span class="warning">{escape(c.text)}</span>: the adaptive figure may '
             "be optimistic; raise the limit" for c in d.adaptive_checks]
    if d.masking_eps_accuracy is not None and d.masking_eps is not None:
        items.append(f"first gradient member at eps {escape(format_eps(d.masking_eps, unit))}: accuracy "
                     f"{escape(pct(d.masking_eps_accuracy))} (should be 0% for a defense that keeps images recognisable)")
    if d.gradient_masking:
        lead = (f'<span class="warning">{escape(MASKING_WARNING)}</span>'
                if d.masking_flagged else escape(MASKING_MOOT))
        items += [f"{lead}: " + "; ".join(escape(r) for r in d.gradient_masking)]
    elif d.gradient_masking_assessed:
        items.append("no sign of gradient masking: no gradient-free or transfer member beat the gradient members"
                     + (" and accuracy falls to 0% at the large budget" if d.masking_eps_accuracy == 0 else ""))
    else:
        items.append(escape(MASKING_NOT_ASSESSED))
    parts.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    return "\n".join(parts)


def detectors(outcomes: list[DetectorOutcome]) -> str:
    rows = []
    for d in outcomes:
        for key, rate in d.detection_rate.items():
            reasons = d.reasons.get(key, {})
            rows.append([d.name, key, pct(rate), f"{d.roc_auc[key]:.3f}" if key in d.roc_auc else "n/a",
                         ", ".join(f"{r}: {n}" for r, n in reasons.items()) or "n/a"])
    per_attack = table(["detector", "attack", "detection rate", "ROC-AUC", "reasons that fired (images)"], rows, "wide")
    fpr_rows = [[d.name, pct(d.fpr_clean), "; ".join(f"{k}: {pct(v)}" for k, v in d.fpr_benign.items()) or "n/a",
                 d.threshold, d.calibration or "fixed thresholds (no calibration)", f"{d.latency_ms_per_image:.2f}"]
                for d in outcomes]
    alarms = table(["detector", "false alarms (clean)", "false alarms (benign changes)", "threshold", "calibrated on",
                    "ms / image"], fpr_rows, "wide")
    return per_attack + "\n" + alarms


def timings(seconds_per_image: dict[str, float], seconds_total: float) -> str:
    rows = [[stage, f"{s:.4g}"] for stage, s in seconds_per_image.items()]
    rows.append([Raw("<b>whole run</b>"), Raw(f"<b>{seconds_total:.1f} s</b>")])
    return table(["stage", "seconds per image"], rows)


def model_checks(checks: ModelChecks | None) -> str:
    """The checks of the model (AutoAttack's): what was found, or that nothing was."""
    if checks is None:
        return ""
    found = "".join(f'<li><span class="warning">{escape(flag)}</span></li>' for flag in checks.flags)
    zero = ("not assessed (no gradients)" if checks.zero_gradient_images is None
            else f"{checks.zero_gradient_images} of {checks.n_images}")
    facts = (f"<li>forward pass {'random' if checks.randomised else 'deterministic'} (two passes compared on "
             f"{checks.n_images} clean images); outputs: {escape(checks.probabilities or 'logits')}; images with a "
             f"zero loss gradient: {escape(zero)}</li>")
    found = found or "<li>no sign of gradient masking</li>"
    return f"<h3>Checks of the evaluation (Croce &amp; Hein 2020)</h3><ul>{found}{facts}</ul>"


def certified(c: CertifiedFigure) -> str:
    """The certified accuracy at the report's radii, each also in grey levels per pixel."""
    reach = largest_certifiable_radius(c.sigma, c.draws, c.alpha)
    rows = [[f"{p.radius:g}", f"{p.grey_levels_per_pixel:.2f}",
             pct(p.accuracy) if p.radius <= reach else f"{pct(p.accuracy)} (beyond {reach:.2f}, the most {c.draws:,} draws "
             "can certify: not a finding about the model)",
             f"{pct(p.interval[0])}–{pct(p.interval[1])}" if p.interval else "n/a"] for p in c.points]
    return table(["L2 radius ([0, 1] units)", "grey levels per pixel (spread evenly)", "certified accuracy",
                  "95% interval"], rows)
