"""The statement traced clause by clause (``scorecard.json`` ``evidence``): each requirement a
technical file answers on adversarial robustness — the EU AI Act's Article 15, the FDA's January
2025 draft guidance on AI-enabled device software functions, ISO/IEC 24029's method classes,
MITRE ATLAS's evasion techniques and NIST's adversarial machine learning taxonomy — mapped to
the figures of this run that address it, with a status decided by fixed rules from what the run
holds, and what it leaves unaddressed.

Data only: the requirements are :data:`REQUIREMENTS` (an id, the document and its reference, a
summary in our own words, and one small rule each); :func:`build_evidence` applies them to a
run's metrics and scorecard rows. It never decides compliance (:data:`DISCLAIMER`): a status says
whether this run holds the measurements a requirement asks about, not whether a device meets it.

Evidence names (``rows``): a threat model row's ``label`` as the scorecard writes it, the
certificate's label (:data:`CERTIFIED`), or one of :data:`CLEAN`, :data:`PER_CLASS`,
:data:`DETECTION`, :data:`BENIGN`, :data:`SKIPPED` (figures of metrics.json the statement shows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from medrobust.evaluation.certified_accuracy import CERTIFIED_LABEL as CERTIFIED
from medrobust.evaluation.results import RunMetrics
from medrobust.evaluation.scorecard_schema import CertifiedEntry, Evidence, ThreatRow

__all__ = ["BENIGN", "CERTIFIED", "CLEAN", "DETECTION", "DISCLAIMER", "PER_CLASS", "REQUIREMENTS", "SKIPPED",
           "STATUSES", "Finding", "Requirement", "RunFacts", "build_evidence", "run_facts"]

STATUSES = ("addressed", "partly", "not_addressed")

CLEAN = "clean accuracy"
PER_CLASS = "per-class sensitivity"
DETECTION = "detectors' detection rates"
BENIGN = "detectors' false alarms on benign changes"
SKIPPED = "unreadable files skipped"

DISCLAIMER = (
    "Requirements traced = each requirement mapped to the figures of this run that address it and to what the run "
    "leaves unaddressed. It does not decide compliance: whether a device meets a requirement is for its manufacturer "
    "and the notified body or regulator to assess. Status, by fixed rules from what the run holds: addressed = the "
    "run has every measurement the rule asks for; partly = some of them, or the requirement reaches beyond what one "
    "evaluation run can show; not addressed = none of them.")

# what no run of medrobust tests: said wherever a requirement reaches it
POISONING = "data poisoning (MITRE ATLAS AML.T0020) and model poisoning: not tested"
CONFIDENTIALITY = "confidentiality attacks (model inversion, membership inference, model stealing): not tested"
PHYSICAL = "physical-world attacks (printed, re-photographed or re-acquired images): every attack here changes stored pixels"
STRONGER = "attacks stronger than those run, budgets beyond the largest tested and other norms (L2, L0, patches)"
LIFECYCLE = ("the lifecycle: one run describes one model version on one test set; repeat the evaluation at each model "
             "change and in post-market monitoring")


@dataclass(frozen=True)
class RunFacts:
    """What one run holds, as the rules read it: the scorecard's rows, the certificate, and the
    figures of metrics.json beside them."""

    rows: tuple[ThreatRow, ...]
    certified: CertifiedEntry | None
    detectors: tuple[str, ...]  # detectors that ran (their detection rates are in the rows)
    benign_measured: bool  # a detector's false alarms on benign changes were measured
    skipped_recorded: bool  # the run records the files it could not read (metrics.json data.skipped)
    per_class: bool  # the baseline has per-class sensitivity
    square_in_autoattack: bool  # Square ran inside AutoAttack (no query row of its own)
    guard_adaptive: bool  # the guard stage's guard-aware members ran

    def labels(self, *threat_models: str) -> list[str]:
        """The labels of the rows of these threat models, in the scorecard's order."""
        return [r.label for r in self.rows if r.threat_model in threat_models]

    @property
    def white_box(self) -> bool:
        return any(r.threat_model == "white-box" for r in self.rows)

    @property
    def black_box(self) -> bool:
        return any(r.threat_model in ("transfer", "query") for r in self.rows)

    @property
    def adaptive_mitigation(self) -> bool:
        """A defense or the guard was measured against an attacker who knows it."""
        return any(r.threat_model == "adaptive" for r in self.rows) or (
            self.guard_adaptive and any(r.threat_model == "guarded" for r in self.rows))


@dataclass(frozen=True)
class Finding:
    """A rule's verdict on one run: the evidence names, the status and what is not addressed."""

    rows: list[str]
    status: str
    gaps: list[str]


@dataclass(frozen=True)
class Requirement:
    """One requirement: its id, the document with its reference, what it asks in our words, and
    the rule that reads a run."""

    requirement: str
    source: str
    summary: str
    rule: Callable[[RunFacts], Finding]


def run_facts(metrics: RunMetrics, rows: list[ThreatRow], certified: CertifiedEntry | None) -> RunFacts:
    """The facts the rules read, from a run's metrics and its scorecard rows.

    Args:
        metrics: the run's metrics.json.
        rows: the scorecard's threat model rows.
        certified: the certificate entry, or None.

    Returns:
        The :class:`RunFacts` every rule of :data:`REQUIREMENTS` reads.
    """
    return RunFacts(
        rows=tuple(rows), certified=certified, detectors=tuple(d.name for d in metrics.detectors),
        benign_measured=any(d.fpr_benign for d in metrics.detectors),
        skipped_recorded="skipped" in metrics.data,
        per_class=any(c.recall is not None for c in metrics.baseline.per_class.values()),
        square_in_autoattack=any(a.attack == "autoattack" for a in metrics.attacks),
        guard_adaptive=metrics.guard is not None and metrics.guard.not_run is None)


def _coverage(*parts: bool) -> str:
    """addressed when every part holds, partly when some do, not_addressed when none."""
    return "addressed" if all(parts) else "partly" if any(parts) else "not_addressed"


def _adversarial_rows(run: RunFacts) -> list[str]:
    rows = run.labels("white-box", "query", "transfer", "non-adaptive", "adaptive", "guarded", "guarded-transfer")
    return rows + ([DETECTION] if run.detectors else [])


def _missing_threats(run: RunFacts) -> list[str]:
    """The threat models an evasion requirement asks about that this run did not measure."""
    gaps = []
    if not run.white_box:
        gaps.append("no white-box gradient attacker ran (the model is a black box, or none was configured)")
    if not run.black_box:
        gaps.append("no black-box attacker ran: neither a query attack (Square) nor a transfer from a surrogate")
    if not run.adaptive_mitigation:
        gaps.append("no defense or guard was measured against an attacker who knows it")
    return gaps


def _clean_figures(run: RunFacts) -> list[str]:
    return [CLEAN, *([PER_CLASS] if run.per_class else [])]


def _art15_1(run: RunFacts) -> Finding:
    rows = [*_clean_figures(run), *_adversarial_rows(run), *([CERTIFIED] if run.certified else [])]
    gaps = [LIFECYCLE, "cybersecurity of the system around the model (access control, the model file's integrity, "
                       "updates): outside what an evaluation run measures"]
    if not run.rows:
        gaps.insert(0, "robustness: no attack ran")
    return Finding(rows, "partly", gaps)  # one run never shows consistency throughout the lifecycle


def _art15_3(run: RunFacts) -> Finding:
    interval = any(r.clean_interval for r in run.rows)
    gaps = ["the declaration itself belongs in the instructions for use, and the figures hold for these test images "
            "only"]
    if not interval:
        gaps.insert(0, "no 95% interval on the clean accuracy (no attacked subset was scored)")
    return Finding(_clean_figures(run), _coverage(interval, run.per_class), gaps)


def _art15_4(run: RunFacts) -> Finding:
    rows = [*([BENIGN] if run.benign_measured else []), *([SKIPPED] if run.skipped_recorded else [])]
    gaps = ["the model's accuracy under benign changes (re-encoding, resizing, other scanners): not measured; only "
            "the detectors' false alarms are",
            "fault tolerance, redundancy and fail-safe plans of the system: outside what an evaluation run measures",
            "feedback loops of a system that keeps learning after release: outside what an evaluation run measures"]
    if not run.benign_measured:
        gaps.insert(0, "no detector ran: false alarms on benign changes not measured")
    return Finding(rows, "partly" if rows else "not_addressed", gaps)  # partly at most: the system is not assessed


def _art15_5(run: RunFacts) -> Finding:
    rows = [*_adversarial_rows(run), *([CERTIFIED] if run.certified else [])]
    status = _coverage(run.white_box, run.black_box, run.adaptive_mitigation)
    return Finding(rows, status, [*_missing_threats(run), POISONING, CONFIDENTIALITY, PHYSICAL])


def _fda_cybersecurity(run: RunFacts) -> Finding:
    status = _coverage(run.white_box, run.black_box, run.adaptive_mitigation)
    gaps = [*_missing_threats(run), "the other AI threats the section lists (data poisoning, model inversion or "
            "stealing, data leakage, performance drift): not tested",
            "the device's cybersecurity beyond the model (threat model of the whole system, software bill of "
            "materials, updates): outside what an evaluation run measures"]
    return Finding(_adversarial_rows(run), status, gaps)


def _fda_performance(run: RunFacts) -> Finding:
    gaps = ["performance in subgroups (sex, age, ethnicity, site, acquisition device): not reported",
            "the test data's independence from development data and its reference standard: the manufacturer's to "
            "show", "repeatability, reproducibility and the clinician-with-device performance: not measured"]
    return Finding(_clean_figures(run), "partly", gaps)  # partly at most: one test set, no subgroups


def _iso_empirical(run: RunFacts) -> Finding:
    rows = _adversarial_rows(run)
    status = "addressed" if run.rows else "not_addressed"
    gaps = ["field trials on images acquired in the deployed setting: not part of a run", STRONGER]
    return Finding(rows, status, (["no attack ran"] if not run.rows else []) + gaps)


def _iso_statistical(run: RunFacts) -> Finding:
    intervals = any(r.clean_interval for r in run.rows)
    rows = [CLEAN, *run.labels("white-box", "query", "transfer", "non-adaptive", "adaptive", "guarded",
                               "guarded-transfer"), *([CERTIFIED] if run.certified else [])]
    gaps = ["the intervals cover the sampling of these test images only, not other populations or scanners"]
    if not run.certified:
        gaps.insert(0, "no statistical robustness guarantee: randomized smoothing's certificate was not computed "
                       "(configure certify)")
    status = "addressed" if run.certified else "partly" if intervals else "not_addressed"
    return Finding(rows, status, gaps)


def _iso_formal(run: RunFacts) -> Finding:
    if run.certified is None:
        return Finding([], "not_addressed", ["no certificate computed (configure certify); no formal verification of "
                                             "the network ran"])
    # partly at most: a randomized-smoothing certificate is a proof about the smoothed classifier that holds with
    # probability 1 - alpha over the noise draws, not a deterministic verification of the network that is deployed
    return Finding([CERTIFIED], "partly", [
        "the certificate holds, with probability 1 - alpha per image, for the smoothed classifier, not for the base "
        "model answering once", "L2 radii only: no L-inf certificate; no deterministic verification of the network"])


def _atlas_evade(run: RunFacts) -> Finding:
    status = _coverage(run.white_box, run.black_box)
    gaps = [g for g in _missing_threats(run) if "defense or guard" not in g] + [PHYSICAL]
    return Finding(_adversarial_rows(run), status, gaps)


def _atlas_white_box(run: RunFacts) -> Finding:
    # a defense's adaptive row is white-box evidence only where the model gave gradients (a black box's is Square)
    rows = run.labels("white-box", *(["adaptive"] if run.white_box else []), *(["guarded"] if run.guard_adaptive else []))
    gaps = [] if rows else ["no gradient attacker ran (the model is a black box, or none was configured)"]
    return Finding(rows, "addressed" if rows else "not_addressed", gaps + [STRONGER])


def _atlas_black_box_optimization(run: RunFacts) -> Finding:
    rows = run.labels("query")
    if rows:
        return Finding(rows, "addressed", ["query attacks other than Square, and limits on the queries an attacker "
                                           "may send: not tested"])
    if run.square_in_autoattack:
        return Finding(run.labels("white-box"), "partly", [
            "Square ran only inside AutoAttack, on the images its gradient attacks left: no query-only row of its own"])
    return Finding([], "not_addressed", ["no query attack ran (configure square)"])


def _atlas_transfer(run: RunFacts) -> Finding:
    rows = run.labels("transfer", "guarded-transfer")
    gaps = ["surrogates other than those given (an attacker picks their own)"] if rows else [
        "no transfer attack ran (no surrogate model given)"]
    return Finding(rows, "addressed" if rows else "not_addressed", gaps)


def _nist_evasion(run: RunFacts) -> Finding:
    rows = [*_adversarial_rows(run), *([CERTIFIED] if run.certified else [])]
    status = _coverage(run.white_box, run.black_box, run.adaptive_mitigation or run.certified is not None)
    gaps = [g for g in _missing_threats(run) if not (run.certified and "defense or guard" in g)]
    return Finding(rows, status, [*gaps, "the taxonomy's poisoning and privacy attacks: not tested", PHYSICAL])


AI_ACT = "Regulation (EU) 2024/1689 (the AI Act), Article 15"
FDA = ("FDA draft guidance \u201cArtificial Intelligence-Enabled Device Software Functions: Lifecycle Management and "
       "Marketing Submission Recommendations\u201d (January 2025)")
ATLAS = "MITRE ATLAS"

REQUIREMENTS: list[Requirement] = [
    Requirement("EU AI Act Art. 15(1)", f"{AI_ACT}, paragraph 1",
                "A high-risk system is designed for an appropriate level of accuracy, robustness and cybersecurity, "
                "and performs consistently in these respects throughout its lifecycle.", _art15_1),
    Requirement("EU AI Act Art. 15(3)", f"{AI_ACT}, paragraph 3",
                "The levels of accuracy and the metrics that measure them are declared in the instructions for use.",
                _art15_3),
    Requirement("EU AI Act Art. 15(4)", f"{AI_ACT}, paragraph 4",
                "The system is as resilient as possible to errors, faults and inconsistencies in its inputs and "
                "environment, by technical and organisational measures.", _art15_4),
    Requirement("EU AI Act Art. 15(5)", f"{AI_ACT}, paragraph 5",
                "The system resists attempts by unauthorised parties to change its use, outputs or performance by "
                "exploiting its vulnerabilities, including inputs crafted to make the model err (adversarial "
                "examples, model evasion), with measures to prevent, detect and control them.", _art15_5),
    Requirement("FDA AI-DSF guidance: cybersecurity", f"{FDA}, its cybersecurity section",
                "A marketing submission explains how AI-specific threats, model evasion among them, were assessed "
                "and what controls mitigate them.", _fda_cybersecurity),
    Requirement("FDA AI-DSF guidance: performance validation", f"{FDA}, its performance validation section",
                "A submission reports the device's performance on test data (sensitivity, specificity and the like, "
                "with their uncertainty), including in relevant subgroups.", _fda_performance),
    Requirement("ISO/IEC 24029 empirical methods", "ISO/IEC TR 24029-1:2021 (assessment of the robustness of neural "
                "networks, overview), empirical method class",
                "Robustness assessed by running the network on chosen inputs, such as attacks and perturbations, "
                "and measuring how its performance degrades.", _iso_empirical),
    Requirement("ISO/IEC 24029 statistical methods", "ISO/IEC TR 24029-1:2021, statistical method class",
                "Robustness assessed by statistics over test data, with stated confidence, up to probabilistic "
                "guarantees.", _iso_statistical),
    Requirement("ISO/IEC 24029 formal methods", "ISO/IEC 24029-2:2023 (methodology for the use of formal methods)",
                "Robustness properties proven for a domain of inputs, e.g. that no change within a radius alters "
                "the answer.", _iso_formal),
    Requirement("MITRE ATLAS AML.T0015", f"{ATLAS}, technique AML.T0015 Evade AI Model (formerly Evade ML Model)",
                "An adversary feeds the model crafted data so that it misclassifies.", _atlas_evade),
    Requirement("MITRE ATLAS AML.T0043.000", f"{ATLAS}, AML.T0043 Craft Adversarial Data, sub-technique White-Box "
                "Optimization", "The adversary has the model and optimises the adversarial input on it directly.",
                _atlas_white_box),
    Requirement("MITRE ATLAS AML.T0043.001", f"{ATLAS}, AML.T0043 Craft Adversarial Data, sub-technique Black-Box "
                "Optimization", "The adversary only queries the model's outputs and optimises the input from them.",
                _atlas_black_box_optimization),
    Requirement("MITRE ATLAS AML.T0043.002", f"{ATLAS}, AML.T0043 Craft Adversarial Data, sub-technique Black-Box "
                "Transfer", "The adversary crafts the input on proxy models of their own and transfers it to the "
                "target.", _atlas_transfer),
    Requirement("NIST AI 100-2 E2025: evasion", "NIST AI 100-2 E2025, Adversarial Machine Learning: a taxonomy and "
                "terminology of attacks and mitigations, evasion attacks",
                "Evasion attacks at deployment, by attacker knowledge (white-box, black-box, transfer), and "
                "mitigations judged against adaptive attacks or with certified guarantees.", _nist_evasion),
]
"""The requirements, in the order the statement lists them. ATLAS ids checked against the ATLAS
technique pages (AML.T0015 was renamed from "Evade ML Model" to "Evade AI Model")."""


def build_evidence(metrics: RunMetrics, rows: list[ThreatRow], certified: CertifiedEntry | None) -> list[Evidence]:
    """The traced requirements of a run (module docstring), from its metrics and scorecard rows.

    Args:
        metrics: the run's metrics.json (detectors, the baseline's per-class figures, the files
            skipped, the guard).
        rows: the scorecard's threat model rows, as :func:`~medrobust.evaluation.scorecard.build_scorecard`
            built them.
        certified: the scorecard's certificate entry; None when none was computed.

    Returns:
        One :class:`~medrobust.evaluation.scorecard_schema.Evidence` per entry of :data:`REQUIREMENTS`,
        in its order.
    """
    run = run_facts(metrics, rows, certified)
    out = []
    for req in REQUIREMENTS:
        found = req.rule(run)
        out.append(Evidence(requirement=req.requirement, source=req.source, summary=req.summary, rows=found.rows,
                            status=found.status, gaps=found.gaps))
    return out
