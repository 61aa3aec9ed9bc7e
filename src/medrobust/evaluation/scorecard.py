"""The robustness scorecard: one row per threat model actually run, read from a run's metrics
alone (``RUN/scorecard.json``; its schema, versioned, and the file's reading and writing are
:mod:`medrobust.evaluation.scorecard_schema`, re-exported here).

Threat models (rows):

* ``white-box`` — a gradient attacker with the model's weights (FGSM, PGD, MI-FGSM, SIA): at
  each budget, the lowest accuracy any of them reached;
* ``transfer`` — an attacker without access to the model, crafting on a surrogate (one row per
  surrogate);
* ``query`` — an attacker who only sees the model's outputs (Square);
* ``non-adaptive`` / ``adaptive`` (one of each per defense) — the defended model against the
  undefended attacks' images, and against an attacker who knows the defense: the worst case
  per image over the adaptive portfolio (:mod:`medrobust.evaluation.adaptive_portfolio`). The
  adaptive attacker may also use the non-adaptive images, so its accuracy at each budget is
  the lower of the two: the adaptive row never reads better than the non-adaptive one. A row
  whose figure may be optimistic (signs of gradient masking) carries a ``warning``;
* ``guarded`` / ``guarded-transfer`` — the guard (defense and detectors) against the attacker who
  knows it, and against transfer images (:mod:`medrobust.evaluation.scorecard_guarded`).

Columns: clean accuracy (with its 95% Wilson interval), accuracy at each tested budget, the
half-accuracy budget (grey levels), the dangerous-flip rate (a finding reported as normal) at
the main budget, and each detector's detection rate at its calibrated false-alarm rate. The
headline of a row is the normalised area under its accuracy curve from 0 to the stored grid's
reference budget, 8/255 on 8-bit data and 16 HU on CT (:attr:`~medrobust.data.stored_grid.StoredGrid.
score_budget`; :func:`~medrobust.evaluation.robustness_curve.normalised_auc`); the overall headline is the
lowest headline among the undefended model's rows (the attacker picks what works best).
What was not run is listed in ``not_tested`` with the reason, and never scored.

Beside the rows, never among them: ``certified``, randomized smoothing's certified accuracy at L2
radii 0.1, 0.25, 0.5 and 1.0 (:mod:`medrobust.evaluation.certified_entry`) — a guarantee for the
smoothed classifier, not an empirical figure of the base model, so it never enters ``overall``.

After them, ``evidence``: each requirement (AI Act Art. 15, FDA guidance, ISO/IEC 24029, MITRE
ATLAS, NIST AI 100-2) traced to the rows that address it, by fixed rules
(:mod:`medrobust.evaluation.evidence`); never a verdict of compliance.
"""

from __future__ import annotations

from medrobust.data.stored_grid import StoredGrid, grid_of_record
from medrobust.evaluation.certified_accuracy import CERTIFIED_DEFINITION
from medrobust.evaluation.certified_entry import NOT_RUN as CERTIFIED_NOT_RUN
from medrobust.evaluation.certified_entry import certified_entry
from medrobust.evaluation.evaluation_checks import MASKING_NOT_ASSESSED, MASKING_WARNING
from medrobust.evaluation.evidence import DISCLAIMER as EVIDENCE_DEFINITION
from medrobust.evaluation.evidence import build_evidence
from medrobust.evaluation.results import AttackOutcome, ClassificationReport, DetectorOutcome, RunMetrics
from medrobust.evaluation.robustness_curve import (
    MIN_SCORED_BUDGETS,
    auc_bounds,
    half_accuracy_budget,
    normalised_auc,
    wilson_interval,
)
from medrobust.evaluation.scorecard_guarded import GUARDED_DEFINITION, guarded_rows
from medrobust.evaluation.scorecard_schema import (
    SCHEMA_VERSION,
    SCORECARD_FILE,
    BudgetPoint,
    DetectorRate,
    Scorecard,
    ThreatRow,
    read_scorecard,
    write_scorecard,
)
from medrobust.evaluation.stage_keys import transfer_sweep_name
from medrobust.specs.components import eps_label, eps_text

__all__ = ["BudgetPoint", "DEFINITIONS", "DetectorRate", "NO_SKILL_ROW", "QUERY_ATTACKS", "SCHEMA_VERSION", "SCORECARD_FILE",
           "Scorecard", "ThreatRow", "build_scorecard", "definitions", "detector_rate", "no_skill", "read_scorecard",
           "score_grid", "scoring_grid", "write_scorecard"]

QUERY_ATTACKS = frozenset({"square"})
NO_SKILL_ROW = "not assessed: the model does not tell the classes apart (see the overall score)"

DEFINITIONS = {
    "score": ("Robustness score = 100 x (area under accuracy versus L-inf budget from 0 to 8/255) / (clean accuracy "
              "x 8/255); 100: accuracy never falls, 0: it is zero at once. The curve joins the tested budgets by "
              "straight lines from the clean accuracy at 0, each point the lowest accuracy at that budget or below; "
              "a row tested at fewer than three budgets up to 8/255 gets no score (its area would be the straight "
              "line's)."),
    "overall": ("Overall = the lowest lower bound of the score among the undefended model's threat models (the "
                "attacker picks the best; no interpolation between budgets counts in the model's favour)."),
    "bounds": ("Bounds = the score's lowest and highest values for any accuracy curve through the tested budgets "
               "that never rises with the budget; the gap is what the budgets tested leave unknown."),
    "grid": ("Every row is scored on one grid of budgets up to 8/255 (the configuration's grid, else the white-box "
             "attacker's): a row tested at fewer of them has no score."),
    "half_accuracy_budget": ("Half-accuracy budget = the smallest L-inf budget, in grey levels of the stored 8-bit "
                             "image, at which accuracy falls to half of clean or below (interpolated)."),
    "dangerous_flip_rate": ("Dangerous-flip rate = images with a finding, correct before the attack, that the "
                            "strongest attack at the main budget made the model call normal, over those images."),
    "detection_rate": ("Detection rate = attacked images a detector flags, beside its false-alarm rate: the "
                       "worst over clean images and the benign changes a pipeline makes (re-encoding, re-windowing, "
                       "resizing); a detector whose ROC-AUC is at or below 0.5, or that flags no more attacked images "
                       "than benign ones, is marked no better than chance."),
    "interval": "Accuracies carry a 95% Wilson score interval over the images tested.",
    "guarded": GUARDED_DEFINITION,
    "certified": CERTIFIED_DEFINITION,
    "evidence": EVIDENCE_DEFINITION,
}
"""The scorecard's definitions on 8-bit data; :func:`definitions` gives them for a run's grid."""

CT_SCORE_WHY = ("16 HU: about two to three times a routine head CT's image noise and under half the contrast between "
                "fresh blood and brain (40-50 HU), so an attacker inside it makes no change a reader would see as a "
                "lesion")
"""Why the score's area stops at 16 HU on CT, as the definition says it (the reasoning is in
:mod:`medrobust.data.stored_grid`)."""


def definitions(grid: StoredGrid) -> dict[str, str]:
    """:data:`DEFINITIONS` for data on ``grid``: on 8-bit data exactly those; on CT the score's
    area and the grid stop at 16 HU (with why) and the half-accuracy budget is in HU."""
    out = dict(DEFINITIONS)
    if grid.unit != "HU":
        return out
    limit = eps_text(grid.score_budget, grid.unit)
    out["score"] = (f"Robustness score = 100 x (area under accuracy versus L-inf budget up to {limit}) / (clean "
                    f"accuracy x {limit}); the area is taken up to {CT_SCORE_WHY}. 100: accuracy never falls, 0: it is "
                    "zero at once. The curve joins the tested budgets by straight lines from the clean accuracy at 0, "
                    "each point the lowest accuracy at that budget or below; a row tested at fewer than three budgets "
                    f"up to {limit} gets no score (its area would be the straight line's).")
    out["grid"] = (f"Every row is scored on one grid of budgets up to {limit} (the configuration's grid, else the "
                   "white-box attacker's): a row tested at fewer of them has no score.")
    out["half_accuracy_budget"] = ("Half-accuracy budget = the smallest L-inf budget, in HU of the stored CT image, at "
                                   "which accuracy falls to half of clean or below (interpolated).")
    return out


def _limit_text(grid: StoredGrid) -> str:
    """The score's budget as a reader sees it: ``8/255``, or on CT ``16 HU``."""
    return eps_text(grid.score_budget, grid.unit) if grid.unit == "HU" else "8/255"


def score_grid(metrics: RunMetrics) -> StoredGrid:
    """The stored grid of a run's data, as its metrics name it (8-bit when they name none)."""
    return grid_of_record((getattr(metrics, "data", None) or {}).get("grid"))


def _interval(accuracy: float, n: int) -> list[float] | None:
    ci = wilson_interval(round(accuracy * n), n)
    return list(ci) if ci else None


def _flip_rate(outcome: AttackOutcome | None) -> tuple[float | None, str]:
    if outcome is None or outcome.dangerous_flips is None:
        return None, "not assessed: no class is named as normal" if outcome is not None else "not assessed"
    count = sum(f.count for f in outcome.dangerous_flips)
    n = 0
    for f in outcome.dangerous_flips:
        if f.n_correct is not None:
            n += f.n_correct
        elif f.rate:
            n += round(f.count / f.rate)
    if n == 0:
        return None, "not defined: no image with a finding was correct before the attack"
    return count / n, f"{count / n:.1%} ({count} of {n}, {outcome.key})"


def _row(threat_model: str, label: str, clean: float, n: int, points: list[tuple[float, float, str]],
         main_eps: float, strongest: AttackOutcome | None, metrics: RunMetrics, flips_override: str | None = None,
         detector_keys: list[str] | None = None, grid: list[float] | None = None,
         measured: list[float] | None = None) -> ThreatRow:
    """One threat model's row. ``grid``: the budgets every row must have been measured at to be
    scored (None: at least :data:`MIN_SCORED_BUDGETS` up to the grid's score budget, 8/255 or
    16 HU); ``measured``: the budgets this row's own attacker ran at (default: its points' budgets)."""
    envelope: dict[float, tuple[float, str]] = {}  # budget -> the lowest accuracy at it or below, and by whom
    best: tuple[float, str] | None = None
    for eps, acc, key in sorted(points):
        if best is None or acc < best[0]:
            best = (acc, key)
        envelope[eps] = best
    curve = [(e, a) for e, (a, _) in sorted(envelope.items())]
    largest = max(envelope) if envelope else 0.0
    stored = score_grid(metrics)
    scored = sorted(e for e in (measured if measured is not None else envelope) if 0 < e <= stored.score_budget + 1e-9)
    unit, levels = budget_units(metrics)
    score, low, high, score_text = _score(clean, curve, largest, scored, grid, unit, stored.score_budget)
    coarse = len(scored) < MIN_SCORED_BUDGETS
    half = half_accuracy_budget(clean, curve)
    half_text = (f"{half * levels:.2f} {unit}" if half is not None else
                 "not defined (clean accuracy 0)" if clean <= 0 else
                 f"> {largest * levels:.3g}{' HU' if unit == 'HU' else ''} (the largest tested)")
    if half is not None and coarse:  # only the tested budgets around it are known (accuracy cannot rise with eps)
        below = max((e for e, (a, _) in envelope.items() if e < half and a > clean / 2), default=0.0)
        above = min(e for e, (a, _) in envelope.items() if e >= half)
        half, half_text = None, (f"between {below * levels:.3g} and {above * levels:.3g} {unit} "
                                 "(not resolved: too few budgets)")
    flip_rate, flip_text = (None, flips_override) if flips_override else _flip_rate(strongest)
    detection = [detector_rate(det, key) for det in metrics.detectors for key in detector_keys or []
                 if key in det.detection_rate]
    return ThreatRow(
        threat_model=threat_model, label=label, attacks=sorted({k for _, _, k in points}), n_images=n,
        clean_accuracy=clean, clean_interval=_interval(clean, n),
        points=[BudgetPoint(eps=e, grey_levels=round(e * 255, 6), accuracy=a, interval=_interval(a, n), attack=k,
                            units=unit, value=round(e * levels, 6)) for e, (a, k) in sorted(envelope.items())],
        main_eps=main_eps, half_accuracy_budget=None if half is None else half * 255, half_accuracy_text=half_text,
        dangerous_flip_rate=flip_rate, dangerous_flips_text=flip_text, detection=detection, score=score,
        score_low=low, score_high=high, score_text=score_text, measured_at=scored)


def budget_units(metrics: RunMetrics) -> tuple[str, int]:
    """The unit budgets are stated in for the run's data and the grid's steps from 0 to 1:
    ``("grey levels", 255)`` for 8-bit data (and runs that predate the record), ``("HU", 4095)`` for CT."""
    grid = (getattr(metrics, "data", None) or {}).get("grid") or {}
    if grid.get("unit") == "HU":
        return "HU", int(grid["high"]) - int(grid["low"])
    return "grey levels", 255


def _score(clean: float, curve: list[tuple[float, float]], largest: float, scored: list[float],
           grid: list[float] | None, unit: str = "grey levels",
           budget: float = 8 / 255) -> tuple[float | None, float | None, float | None, str]:
    """(score, its lower and upper bound from monotonicity, its text) of a row whose curve is
    ``curve`` and whose attacker ran at ``scored`` (see :func:`_row`); budgets named in ``unit``,
    the area taken up to ``budget`` (the grid's score budget: 8/255, CT 16 HU)."""
    score = normalised_auc(clean, curve, budget)
    limit = eps_text(budget, unit) if unit == "HU" else "8/255"
    if score is None:
        if clean <= 0:
            return None, None, None, "not defined: clean accuracy is 0"
        if unit == "HU":
            return None, None, None, (f"not defined: budgets tested only up to {eps_text(largest, unit)}, below the "
                                      f"score's {limit}")
        return None, None, None, f"not defined: budgets tested only up to {largest * 255:.3g}/255, below 8/255"
    tested = ", ".join(eps_text(e, unit) for e in scored) or "no budget"
    if grid is not None and any(all(abs(g - e) > 1e-9 for e in scored) for g in grid):
        return None, None, None, (f"not defined (tested at {tested} only; every row is scored on the grid "
                                  f"{', '.join(eps_text(g, unit) for g in grid)})")
    if len(scored) < MIN_SCORED_BUDGETS:  # the area would be the straight line's, whatever the model does in between
        return None, None, None, (f"not defined: tested at fewer than {MIN_SCORED_BUDGETS} budgets up to {limit} "
                                  f"(only {tested})")
    low, high = auc_bounds(clean, curve, budget) or (score, score)
    return score, low, high, f"{score:.1f} / 100 (between {low:.1f} and {high:.1f})"


def detector_rate(det: DetectorOutcome, key: str) -> DetectorRate:
    """A detector's figure on attack ``key``: its detection rate beside its worst false-alarm rate
    (clean images judged against themselves cost a reference detector nothing; a benign resize may
    cost it a third), and "no better than chance" when its ROC-AUC is at or below 0.5 or it flags
    no larger share of attacked images than of benign ones."""
    alarms = {"clean images": det.fpr_clean, **{f"benign change: {k}": v for k, v in det.fpr_benign.items()}}
    worst = max(alarms, key=alarms.__getitem__)
    auc = det.roc_auc.get(key)
    rate = det.detection_rate[key]
    note = None
    if (auc is not None and auc <= 0.5) or rate <= alarms[worst]:
        note = (f"no better than chance: ROC-AUC {auc:.2f}" if auc is not None and auc <= 0.5 else
                f"no better than chance: it flags {rate:.1%} of attacked images and {alarms[worst]:.1%} of "
                f"{worst.removeprefix('benign change: ')} images")
    return DetectorRate(detector=det.name, attack=key, detection_rate=rate, false_alarm_rate=alarms[worst],
                        false_alarms_on=worst, roc_auc=auc, calibration=det.calibration, note=note)


def _strongest(outcomes: list[AttackOutcome], eps: float) -> AttackOutcome | None:
    at_main = [o for o in outcomes if abs(o.eps - eps) < 1e-9]
    return min(at_main, key=lambda o: o.adversarial.accuracy) if at_main else None


def _main_eps(outcomes: list[AttackOutcome], reference: float = 8 / 255) -> float:
    """The budget most of the attacks were run at (``reference``, the grid's score budget, when it
    is among them)."""
    budgets = [o.eps for o in outcomes]
    if any(abs(e - reference) < 1e-9 for e in budgets):
        return reference
    return max(set(budgets), key=budgets.count)


def build_scorecard(metrics: RunMetrics) -> Scorecard:
    """The scorecard of a run (see the module docstring), from its metrics alone."""
    bounded = [o for o in metrics.attacks if o.eps > 0]
    n = int(metrics.data.get("attack_images") or (bounded[0].clean.n if bounded else metrics.baseline.n))
    grid = scoring_grid(metrics, bounded)
    rows, not_tested = _undefended_rows(metrics, bounded, n, grid)
    checks = metrics.model_checks
    for row in rows:
        if row.threat_model == "white-box" and checks is not None and checks.flags:
            row.warning = "; ".join(checks.flags)  # evaluation_checks' wording: why the figure may be optimistic
    for d in metrics.defenses:
        rows += _defense_rows(metrics, d, n, grid)
    if not metrics.defenses:
        not_tested.append("adaptive attacker against a defense: not tested (no defense configured)")
    rows += guarded_rows(metrics.guard, n, lambda threat, label, clean, n_, points, main: _row(
        threat, label, clean, n_, points, main, None, metrics, flips_override="not assessed through the guard",
        grid=grid))
    if metrics.guard is None:
        not_tested.append("guarded model (defense and detectors against an attacker who knows both): not tested "
                          "(no guard configured)")
    not_tested += _detectors_not_run(metrics)
    not_tested += list(metrics.config.get("left_out") or [])  # what the preset left out, with the reason
    certified = certified_entry(metrics)
    if certified is None:
        not_tested.append(CERTIFIED_NOT_RUN)
    undefended = [r.score_low for r in rows if r.threat_model in ("white-box", "transfer", "query")
                  and r.score_low is not None]
    overall = min(undefended) if undefended else None  # the lower bound: no interpolation counted in the model's favour
    unskilled = no_skill(metrics.baseline)
    if unskilled is not None:  # robustness of a model that cannot classify is no robustness at all
        for row in rows:
            row.score, row.score_text = None, NO_SKILL_ROW
        overall = None
    return Scorecard(
        run=metrics.name, title=metrics.config.get("title"), created=metrics.created,
        medrobust_version=metrics.medrobust_version, seed=metrics.config.get("seed"),
        model={**{k: v for k, v in metrics.model.items() if k in ("arch", "parameters", "contract", "file", "sha256",
                                                                    "surrogates")},
               **({"version": metrics.config["model_version"]} if metrics.config.get("model_version") else {})},
        data={**{k: metrics.data.get(k) for k in ("source", "size", "classes", "split", "n", "tested", "attack_images",
                                                  "normal_class")},
              **{k: metrics.data[k] for k in ("grid", "noise") if k in metrics.data}},  # the budget unit and noise
        rows=rows, not_tested=not_tested, overall=overall, grid=grid or [],
        overall_text=f"{overall:.1f} / 100" if overall is not None else unskilled or "not defined: no undefended threat "
        f"model was tested at {MIN_SCORED_BUDGETS} or more budgets up to {_limit_text(score_grid(metrics))}",
        definitions={k: v for k, v in definitions(score_grid(metrics)).items() if k != "certified" or certified is not None},
        certified=certified, evidence=build_evidence(metrics, rows, certified))


def scoring_grid(metrics: RunMetrics, bounded: list[AttackOutcome]) -> list[float] | None:
    """The budgets (up to the grid's score budget: 8/255, CT 16 HU) every row must have been
    measured at to be scored: the configuration's ``grid`` when it gives one, else the undefended
    model's own (white-box, or query for a black box: its attacks' budgets and sweeps); None when
    no attack ran."""
    return grid_budgets(metrics.config.get("grid"), bounded, metrics.eps_sweep, score_grid(metrics).score_budget)


def grid_budgets(given: list | None, bounded: list[AttackOutcome], eps_sweep: dict[str, list],
                 limit: float = 8 / 255) -> list[float] | None:
    """:func:`scoring_grid` from its parts (``given``: the configuration's ``grid``; ``eps_sweep``:
    attack -> its sweep points; ``limit``: the data grid's score budget, 8/255 or CT's 16 HU), so
    a stage can measure on the grid before the metrics exist."""
    from medrobust.specs.components import parse_number

    if given:
        return sorted(b for b in (parse_number(g) if isinstance(g, str) else float(g) for g in given)
                      if b <= limit + 1e-9)
    white = [o for o in bounded if o.source == "white-box"]
    main = [o for o in white if o.attack not in QUERY_ATTACKS] or white
    budgets = {o.eps for o in main} | {p.eps for o in main for p in eps_sweep.get(o.attack, [])}
    budgets = sorted(b for b in budgets if 0 < b <= limit + 1e-9)
    return budgets or None


def _undefended_rows(metrics: RunMetrics, bounded: list[AttackOutcome], n: int,
                     grid: list[float] | None) -> tuple[list[ThreatRow], list[str]]:
    """The white-box, query and transfer rows of the undefended model, and what was not tested."""
    white = [o for o in bounded if o.source == "white-box" and o.attack not in QUERY_ATTACKS]
    query = [o for o in bounded if o.source == "white-box" and o.attack in QUERY_ATTACKS]
    transfer: dict[str, list[AttackOutcome]] = {}
    for o in bounded:
        if o.source != "white-box":
            transfer.setdefault(o.source, []).append(o)
    rows: list[ThreatRow] = []
    not_tested: list[str] = []

    def points_of(outcomes: list[AttackOutcome]) -> list[tuple[float, float, str]]:
        pts = [(o.eps, o.adversarial.accuracy, o.key) for o in outcomes]
        for o in outcomes:  # the sweeps of these attacks (white-box or query)
            for p in metrics.eps_sweep.get(o.attack, []):
                if p.eps <= 0:  # a budget of 0 is the clean accuracy, already the curve's start
                    continue
                pts.append((p.eps, p.accuracy, f"{o.attack}@{eps_label(p.eps)}"))
        return pts

    for threat, label, outcomes in [("white-box", "white-box gradient attacker", white),
                                    ("query", "query-only attacker (Square)", query)]:
        if outcomes:
            main = _main_eps(outcomes, score_grid(metrics).score_budget)
            strongest = _strongest(outcomes, main)
            rows.append(_row(threat, label, outcomes[0].clean.accuracy, n, points_of(outcomes), main, strongest,
                             metrics, detector_keys=[strongest.key] if strongest else [], grid=grid))
    if not white:
        not_tested.append("white-box gradient attacker: not tested (no gradient attack ran on the model"
                          + (": it is a black box)" if not metrics.model.get("differentiable", True) else ")"))
    if not query and any(o.attack == "autoattack" for o in white):
        not_tested.append("query-only attacker: not a row of its own (Square ran inside autoattack, on the images "
                          "its gradient attacks left; those it broke count in the white-box row)")
    elif not query:
        not_tested.append("query-only attacker: not tested (no Square attack configured)")
    for source, outcomes in transfer.items():
        main = _main_eps(outcomes, score_grid(metrics).score_budget)
        strongest = _strongest(outcomes, main)
        points = [(o.eps, o.adversarial.accuracy, o.key) for o in outcomes]
        points += [(p.eps, p.accuracy, f"{o.attack}@{eps_label(p.eps)} from {source}") for o in outcomes
                   for p in metrics.eps_sweep.get(transfer_sweep_name(o.attack, source), []) if p.eps > 0]
        rows.append(_row("transfer", f"transfer attacker from {source}", outcomes[0].clean.accuracy, n,
                         points, main, strongest, metrics,
                         detector_keys=[strongest.key] if strongest else [], grid=grid))
    if not transfer:
        not_tested.append("transfer attacker without model access: not tested (no surrogate given)")
    return rows, not_tested


def _defense_rows(metrics: RunMetrics, d, n: int, grid: list[float] | None) -> list[ThreatRow]:
    """A defense's non-adaptive row (the undefended attacks' images defended, at each budget) and
    its adaptive row (the portfolio's worst case at each budget, never above the non-adaptive)."""
    by_key = {o.key: o for o in metrics.attacks}
    plain = [(d.non_adaptive_eps[k] if k in d.non_adaptive_eps else by_key[k].eps, acc, k)
             for k, acc in d.non_adaptive.items()
             if k in d.non_adaptive_eps or (k in by_key and by_key[k].source == "white-box")]
    plain = [p for p in plain if p[0] > 0]
    reference = score_grid(metrics).score_budget
    # metrics written before adaptive_eps was recorded: the plain attacks' budget
    adaptive_eps = d.adaptive_eps if d.adaptive_eps is not None else (plain[0][0] if plain else reference)
    note = "not assessed through the defense"
    rows = []
    if plain:
        main = _main_eps([by_key[k] for _, _, k in plain if k in by_key], reference) \
            if any(k in by_key for _, _, k in plain) else adaptive_eps
        rows.append(_row("non-adaptive", f"{d.name}, non-adaptive attacker", d.clean.accuracy, n, plain, main,
                         None, metrics, flips_override=note, grid=grid))
    worst = [(p.eps, p.accuracy, f"adaptive worst case@{eps_label(p.eps)}") for p in d.adaptive_sweep] \
        or [(adaptive_eps, d.adaptive_accuracy, d.adaptive_attack)]
    how = "worst case" if d.adaptive_members else d.gradient_mode  # the members: the row's attacks
    row = _row("adaptive", f"{d.name}, adaptive attacker ({how})", d.clean.accuracy, n, [*plain, *worst], adaptive_eps,
               None, metrics, flips_override=note, grid=grid, measured=[e for e, _, _ in worst])  # where it adapted
    if d.gradient_masking:
        row.warning = f"{MASKING_WARNING} ({'; '.join(d.gradient_masking)})"
    elif not d.gradient_masking_assessed:
        row.warning = MASKING_NOT_ASSESSED
    return [*rows, row]


DETECTOR_NAMES = {"reference": "the study's reference detector (needs the original image)",
                  "squeeze": "the reference-free squeeze detector"}


def _detectors_not_run(metrics: RunMetrics) -> list[str]:
    """One line per detector that did not run, saying why (not configured, or no attack to detect)."""
    ran = {d.name for d in metrics.detectors}
    configured = metrics.config.get("detectors") or {}
    out = []
    for name, what in DETECTOR_NAMES.items():
        if name in ran:
            continue
        section = configured.get(name)
        if section is None or not section.get("enabled", True):
            out.append(f"{what}: not tested (not configured)")
        else:
            out.append(f"{what}: not tested (no white-box attack ran whose images it could judge)")
    return out


def no_skill(baseline: ClassificationReport) -> str | None:
    """Why no robustness score is given when the model does not beat always answering the test
    set's most frequent class (its clean accuracy's 95% Wilson interval reaches that rate), else
    None. Such a model has little to lose: a constant answer scores 100 / 100 on every attack."""
    counts = [sum(row) for row in baseline.confusion_matrix]
    if not baseline.n or not counts or not sum(counts):
        return None
    majority = max(range(len(counts)), key=counts.__getitem__)
    rate = counts[majority] / sum(counts)
    interval = wilson_interval(round(baseline.accuracy * baseline.n), baseline.n)
    if interval is None or interval[0] > rate:
        return None
    return (f"not assessed: clean accuracy {baseline.accuracy:.1%} (95% CI {interval[0]:.1%}-{interval[1]:.1%}, "
            f"{baseline.n} images) is not above the {rate:.1%} of always answering {baseline.classes[majority]}; "
            "a robustness score needs a model that tells the classes apart")
