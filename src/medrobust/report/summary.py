"""The plain-language summary at the top of the report, for a reader who is not a machine
learning specialist (a clinical-safety officer): what an attacker does to accuracy, which
findings it hides, what the defenses win back, what the detectors catch — every number taken
from ``metrics.json`` (:class:`~medrobust.evaluation.results.RunMetrics`) and listed with where
it came from, so a test can check the text says exactly what the metrics say.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from medrobust.evaluation.classification import NOT_ASSESSED_NO_NORMAL
from medrobust.evaluation.evaluation_checks import MASKING_MOOT, MASKING_WARNING
from medrobust.evaluation.results import AttackOutcome, DefenseOutcome, DetectorOutcome, RunMetrics
from medrobust.evaluation.scorecard import QUERY_ATTACKS
from medrobust.report.run_contents import RunContents, budget_unit, format_eps, noise_text, pct, visible_budget

PREFERRED_BENIGN = "jpeg90"
"""The benign change quoted for false alarms when present (re-encoding: the most common one)."""


@dataclass(frozen=True)
class SummaryNumber:
    """One number the summary states: ``value`` as in metrics.json, ``text`` as printed, and
    ``source``, the path to the value in metrics.json."""

    name: str
    value: float
    text: str
    source: str


@dataclass(frozen=True)
class Summary:
    html: str
    numbers: list[SummaryNumber]


class _Writer:
    """Collects sentences and the numbers they quote."""

    def __init__(self) -> None:
        self.sentences: list[str] = []
        self.numbers: list[SummaryNumber] = []

    def pct(self, name: str, value: float, source: str) -> str:
        text = pct(value)
        self.numbers.append(SummaryNumber(name, value, text, source))
        return f"<b>{text}</b>"

    def points(self, name: str, value: float, source: str) -> str:
        text = f"{abs(value):.1f} points"
        self.numbers.append(SummaryNumber(name, value, text, source))
        return f"<b>{text}</b>"

    def count(self, name: str, value: int, source: str) -> str:
        self.numbers.append(SummaryNumber(name, float(value), str(value), source))
        return f"<b>{value}</b>"


def attack_label(attack: AttackOutcome, unit: str = "grey levels") -> str:
    """``SIA at 8/255`` (CT: ``APGD-CE at 4 HU``), plus the source when the attack was transferred."""
    label = f"{attack.attack.upper()} at {format_eps(attack.eps, unit)}"
    return label if attack.source == "white-box" else f"{label} ({attack.source})"


def _baseline(w: _Writer, metrics: RunMetrics) -> None:
    b = metrics.baseline
    w.sentences.append(f"Without any attack the model classifies {b.n} test images with accuracy "
                       f"{w.pct('baseline_accuracy', b.accuracy, 'baseline.accuracy')}.")
    untested = metrics.data.get("classes_without_images") or []
    if untested:
        w.sentences.append(f"The data holds no image of {escape(', '.join(untested))}: the model's sensitivity for "
                           f"{'that class' if len(untested) == 1 else 'those classes'} is not assessed.")


def _bound_sentence(attack: AttackOutcome, metrics: RunMetrics) -> str:
    """How far the attacker may change each pixel (8-bit) or voxel (CT: in HU, beside the data's noise)."""
    visible = " (a budget large enough to be visible)" if visible_budget(attack.eps) else ""
    if budget_unit(metrics) != "HU":
        return f"No pixel changes by more than {format_eps(attack.eps)} of the grey range{visible}."
    return voxel_budget_sentence(attack.eps, metrics)


def voxel_budget_sentence(eps: float, metrics: RunMetrics) -> str:
    """How far an attacker with budget ``eps`` changes each voxel of a CT run, in HU beside the
    data's measured noise: ``The attacker changes each voxel by at most 4 HU, below the image noise
    of 6.1 HU (...).`` (the report's summary and the command line's)."""
    noise = (metrics.data.get("noise") or {}).get("std")
    hu = format_eps(eps, "HU")
    if noise is None:
        return f"The attacker changes each voxel by at most {hu} (the image noise was not measured)."
    side = "below" if eps * 4095 < noise else "at or above"
    return f"The attacker changes each voxel by at most {hu}, {side} {noise_text(metrics)}."


def _attack(w: _Writer, attack: AttackOutcome, metrics: RunMetrics) -> None:
    src = f"attacks[{attack.key}]"
    if attack.source == "white-box" and attack.attack in QUERY_ATTACKS:
        who = "an attacker who may only query the model's outputs (no gradients)"
    elif attack.source == "white-box":
        who = "an attacker who can compute the model's gradients"
    else:
        who = f"an attacker without access to the model ({attack.source})"
    if attack.success_rate_correct is None:
        changed = ("the rate at which it changes correct answers is not defined (0 correctly classified images)")
    else:
        changed = (f"it changes the answer on "
                   f"{w.pct('attack_success_rate_correct', attack.success_rate_correct, src + '.success_rate_correct')} "
                   "of the images the model had right")
    unit = budget_unit(metrics)
    w.sentences.append(
        f"{escape(attack_label(attack, unit))}, by {escape(who, quote=False)}, takes accuracy from "
        f"{w.pct('attack_clean_accuracy', attack.clean.accuracy, src + '.clean.accuracy')} to "
        f"{w.pct('attack_adversarial_accuracy', attack.adversarial.accuracy, src + '.adversarial.accuracy')} "
        f"on {attack.adversarial.n} images; {changed}. "
        + escape(_bound_sentence(attack, metrics), quote=False))
    if attack.dangerous_flips is None:
        w.sentences.append(f"After {escape(attack.key)}: {escape(NOT_ASSESSED_NO_NORMAL)}.")
        return
    flips = [f for f in attack.dangerous_flips if f.count > 0]
    if not flips:
        normal = attack.dangerous_flips[0].predicted_class if attack.dangerous_flips else "normal"
        w.sentences.append(f"No image with a finding was reported as {escape(normal)} after {escape(attack.key)}.")
    for flip in flips:
        kind = "missed emergencies" if flip.emergency else "missed findings"
        n = w.count(f"dangerous_flips[{flip.true_class}]", flip.count,
                    f"{src}.dangerous_flips[{flip.true_class}].count")
        share = w.pct(f"dangerous_flips[{flip.true_class}].rate", flip.rate, f"{src}.dangerous_flips[{flip.true_class}].rate")
        w.sentences.append(f"{n} {escape(flip.true_class.lower())} images were reported as "
                           f"{escape(flip.predicted_class)} after the attack ({share} of the {escape(flip.true_class.lower())} "
                           f"images the model had right) &mdash; <b>{kind}</b>.")


def _strongest(w: _Writer, metrics: RunMetrics, main: AttackOutcome) -> None:
    strongest = min(metrics.attacks, key=lambda a: a.adversarial.accuracy)
    if strongest is main or strongest.adversarial.accuracy >= main.adversarial.accuracy:
        return
    missed = sum(f.count for f in strongest.dangerous_flips or [])
    src = f"attacks[{strongest.key}]"
    sentence = (f"The strongest attack in this run, {escape(attack_label(strongest, budget_unit(metrics)))}, leaves accuracy at "
                f"{w.pct('strongest_adversarial_accuracy', strongest.adversarial.accuracy, src + '.adversarial.accuracy')}")
    if missed:
        n = w.count("strongest_dangerous_flips", missed, src + ".dangerous_flips[*].count")
        normal = escape(strongest.dangerous_flips[0].predicted_class)
        sentence += f" and makes the model call {n} images with a finding {normal}"
    w.sentences.append(sentence + ".")


def _transfer(w: _Writer, metrics: RunMetrics, main: AttackOutcome) -> None:
    transferred = [a for a in metrics.attacks if a.source != "white-box" and a is not main]
    if not transferred:
        return
    worst = min(transferred, key=lambda a: a.adversarial.accuracy)
    w.sentences.append(
        f"Even crafted without access to the model, {escape(attack_label(worst, budget_unit(metrics)))} takes accuracy to "
        f"{w.pct('transfer_adversarial_accuracy', worst.adversarial.accuracy, f'attacks[{worst.key}].adversarial.accuracy')}.")


def _defense(w: _Writer, defense: DefenseOutcome, main: AttackOutcome) -> None:
    src = f"defenses[{defense.name}]"
    parts = []
    if main.key in defense.non_adaptive_recovery_pp:
        r = defense.non_adaptive_recovery_pp[main.key]
        verb = "wins back" if r >= 0 else "loses"
        parts.append(f"{verb} {w.points('defense_non_adaptive_recovery_pp', r, f'{src}.non_adaptive_recovery_pp[{main.key}]')}"
                     f" against an attacker who ignores it ({escape(main.key)})")
    r = defense.adaptive_recovery_pp
    verb = "wins back" if r >= 0 else "loses"
    parts.append(f"{verb} {w.points('defense_adaptive_recovery_pp', r, f'{src}.adaptive_recovery_pp')} against one who "
                 f"adapts to it ({escape(defense.adaptive_attack)}, worst-case accuracy "
                 f"{w.pct('defense_adaptive_accuracy', defense.adaptive_accuracy, f'{src}.adaptive_accuracy')})")
    cost = defense.clean_cost_pp
    cost_text = (f"on clean images it costs {w.points('defense_clean_cost_pp', cost, f'{src}.clean_cost_pp')} of accuracy"
                 if cost >= 0 else
                 f"on clean images it even gains {w.points('defense_clean_cost_pp', cost, f'{src}.clean_cost_pp')}")
    w.sentences.append(f"The defense {escape(defense.name)} " + " and ".join(parts) + f"; {cost_text}.")
    if defense.gradient_masking:
        lead = MASKING_WARNING if defense.masking_flagged else MASKING_MOOT
        w.sentences.append(f"For {escape(defense.name)}, {escape(lead)}: "
                           + "; ".join(escape(r) for r in defense.gradient_masking) + ".")


def _detector(w: _Writer, detector: DetectorOutcome, main: AttackOutcome | None) -> None:
    src = f"detectors[{detector.name}]"
    key = main.key if main is not None and main.key in detector.detection_rate else next(iter(detector.detection_rate), None)
    if key is None:
        return
    rate = w.pct(f"detector[{detector.name}].detection_rate", detector.detection_rate[key], f"{src}.detection_rate[{key}]")
    sentence = (f"The {escape(detector.name)} detector flags {rate}"
                f" of attacked images ({escape(key)}) with "
                f"{w.pct(f'detector[{detector.name}].fpr_clean', detector.fpr_clean, f'{src}.fpr_clean')} false alarms on "
                "clean images")
    if detector.fpr_benign:
        benign = PREFERRED_BENIGN if PREFERRED_BENIGN in detector.fpr_benign else max(detector.fpr_benign,
                                                                                       key=detector.fpr_benign.__getitem__)
        what = "re-encoded images" if benign == PREFERRED_BENIGN else "images after a benign change"
        value = detector.fpr_benign[benign]
        sentence += (f" and {w.pct(f'detector[{detector.name}].fpr_benign', value, f'{src}.fpr_benign[{benign}]')} "
                     f"on {what} ({escape(benign)})")
    w.sentences.append(sentence + ".")


def _guard(w: _Writer, metrics: RunMetrics) -> None:
    """The guard at its largest budget: the share of attacked images it accepts with a wrong label,
    and its clean cost."""
    g = metrics.guard
    if g is None or not g.budgets:
        return
    i, b = max(enumerate(g.budgets), key=lambda item: item[1].eps)
    what = " + ".join([g.defense or "no defense", *g.detectors])
    w.sentences.append(
        f"Guarded by {escape(what)} (as <code>mr.guard.from_run</code> serves it), against an attacker who knows "
        f"the defense and the detectors, {w.pct('guard_evasion', b.evasion_rate, f'guard.budgets.{i}.evasion_rate')} "
        f"of attacked images at {format_eps(b.eps)} are accepted with a wrong label; the guard abstains on "
        f"{w.pct('guard_clean_abstention', g.clean.abstained_rate, 'guard.clean.abstained_rate')} of clean images.")


def build_summary(contents: RunContents) -> Summary:
    """The summary's HTML (a score line and a list of plain sentences) and the numbers it quotes."""
    metrics = contents.metrics
    w = _Writer()
    _baseline(w, metrics)
    main = contents.main_attack()
    if main is not None:
        _attack(w, main, metrics)
        _strongest(w, metrics, main)
        _transfer(w, metrics, main)
        defense = contents.main_defense()
        if defense is not None:
            _defense(w, defense, main)
    else:
        w.sentences.append("This run contains no attack results.")
    for detector in metrics.detectors:
        _detector(w, detector, main)
    _guard(w, metrics)
    rb = metrics.robustbench
    if rb is not None:
        w.sentences.append(f"In RobustBench's terms (AutoAttack without FAB-T at 8/255 L-inf on float images, not "
                           f"rounded to 8 bits; {rb.n} images) the model keeps an accuracy of "
                           f"{w.pct('robustbench', rb.robust_accuracy, 'robustbench.robust_accuracy')}, to set beside "
                           "published figures; it is not a scorecard row (the scorecard's images are the stored ones).")
    score = metrics.robustness_score
    if score.value is None:  # undefined (e.g. no undefended threat model tested up to 8/255): never a number
        value_html = '<span class="score-value">not defined</span>'
    else:
        w.numbers.append(SummaryNumber("robustness_score", score.value, f"{score.value:.1f}", "robustness_score.value"))
        value_html = f'<span class="score-value">{score.value:.1f}</span><span class="score-max">/ 100</span>'
    items = "\n".join(f"<li>{s}</li>" for s in w.sentences)
    html = (f'<div class="score">{value_html}'
            f'<div class="score-text"><b>Robustness score.</b> {escape(score.definition)}</div></div>\n'
            f'<ul class="summary">\n{items}\n</ul>')
    return Summary(html=html, numbers=w.numbers)
