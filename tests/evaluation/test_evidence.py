"""The requirements traced (scorecard.json ``evidence``): each status follows its rule from what
the run holds — a run with only a white-box attacker addresses Art. 15(5) partly, a certificate
makes ISO/IEC 24029-2's formal class partly addressed and its absence not addressed — every evidence
name points at something the scorecard or metrics.json has, and no entry claims compliance."""

from __future__ import annotations

import pytest

from medrobust.evaluation.certified_accuracy import CERTIFIED_LABEL
from medrobust.evaluation.evidence import (
    BENIGN,
    CLEAN,
    DETECTION,
    DISCLAIMER,
    PER_CLASS,
    REQUIREMENTS,
    SKIPPED,
    STATUSES,
    run_facts,
)
from medrobust.evaluation.results import RunMetrics
from medrobust.evaluation.scorecard import build_scorecard
from tests.report.conftest import make_metrics


def _evidence(metrics: RunMetrics) -> dict:
    return {e.requirement: e for e in build_scorecard(metrics).evidence}


@pytest.fixture(scope="module")
def complete():
    return _evidence(make_metrics())


@pytest.fixture(scope="module")
def white_box_only():
    """White-box attacks only: no surrogate, no defense (so no certificate either), no detector."""
    return _evidence(make_metrics(transfer=False, defenses=False, detectors=False))


def test_every_requirement_is_traced_once_with_a_known_status(complete) -> None:
    assert list(complete) == [r.requirement for r in REQUIREMENTS]
    assert len(complete) == 14
    assert all(e.status in STATUSES and e.source and e.summary for e in complete.values())
    assert all(len(e.summary) < 320 for e in complete.values())  # a summary in our words, not the text quoted


def test_a_complete_run(complete) -> None:
    status = {k: e.status for k, e in complete.items()}
    assert status["EU AI Act Art. 15(5)"] == "addressed"  # white-box, transfer and an adaptive attacker
    assert status["EU AI Act Art. 15(1)"] == "partly"  # never more: one run says nothing of the lifecycle
    assert any("lifecycle" in g for g in complete["EU AI Act Art. 15(1)"].gaps)
    assert status["EU AI Act Art. 15(3)"] == "addressed"
    assert complete["EU AI Act Art. 15(3)"].rows == [CLEAN, PER_CLASS]
    assert status["EU AI Act Art. 15(4)"] == "partly"
    assert complete["EU AI Act Art. 15(4)"].rows == [BENIGN, SKIPPED]
    assert status["ISO/IEC 24029 formal methods"] == "partly"  # a probabilistic proof about the smoothed classifier
    assert complete["ISO/IEC 24029 formal methods"].rows == [CERTIFIED_LABEL]
    assert any("smoothed classifier" in g for g in complete["ISO/IEC 24029 formal methods"].gaps)
    assert status["ISO/IEC 24029 statistical methods"] == "addressed"
    assert status["FDA AI-DSF guidance: performance validation"] == "partly"
    assert status["MITRE ATLAS AML.T0043.001"] == "not_addressed"  # no Square ran
    assert status["MITRE ATLAS AML.T0043.002"] == "addressed"
    assert complete["MITRE ATLAS AML.T0043.002"].rows == ["transfer attacker from resnet18"]
    assert complete["EU AI Act Art. 15(5)"].rows == [
        "white-box gradient attacker", "transfer attacker from resnet18", "jpeg+tv, non-adaptive attacker",
        "jpeg+tv, adaptive attacker (bpda)", DETECTION, CERTIFIED_LABEL]
    assert any("AML.T0020" in g for g in complete["EU AI Act Art. 15(5)"].gaps)  # poisoning: never tested here


def test_only_a_white_box_attacker(white_box_only) -> None:
    art15_5 = white_box_only["EU AI Act Art. 15(5)"]
    assert art15_5.status == "partly" and art15_5.rows == ["white-box gradient attacker"]
    assert any("no black-box attacker" in g for g in art15_5.gaps)
    assert any("no defense or guard" in g for g in art15_5.gaps)
    formal = white_box_only["ISO/IEC 24029 formal methods"]
    assert formal.status == "not_addressed" and formal.rows == []
    assert white_box_only["ISO/IEC 24029 statistical methods"].status == "partly"  # intervals, no guarantee
    assert white_box_only["MITRE ATLAS AML.T0043.002"].status == "not_addressed"
    assert white_box_only["MITRE ATLAS AML.T0015"].status == "partly"
    assert white_box_only["EU AI Act Art. 15(4)"].rows == [SKIPPED]  # no detector: the bad-input handling only
    assert white_box_only["FDA AI-DSF guidance: cybersecurity"].status == "partly"


def test_no_attack_at_all() -> None:
    metrics = make_metrics(transfer=False, defenses=False, detectors=False)
    bare = RunMetrics.model_validate({**metrics.model_dump(), "attacks": [], "eps_sweep": {}})
    evidence = _evidence(bare)
    for requirement in ("EU AI Act Art. 15(5)", "ISO/IEC 24029 empirical methods", "MITRE ATLAS AML.T0015",
                        "MITRE ATLAS AML.T0043.000", "NIST AI 100-2 E2025: evasion"):
        assert evidence[requirement].status == "not_addressed", requirement
    assert evidence["EU AI Act Art. 15(1)"].status == "partly"  # the clean accuracy still speaks to accuracy
    assert evidence["EU AI Act Art. 15(3)"].status == "partly"  # no attacked subset: no interval on the clean figure


def test_query_attacks_and_square_inside_autoattack() -> None:
    metrics = make_metrics(transfer=False, defenses=False, detectors=False)
    square = metrics.attacks[0].model_copy(update={"key": "square@8/255", "attack": "square"})
    with_square = RunMetrics.model_validate({**metrics.model_dump(), "attacks": [
        *[a.model_dump() for a in metrics.attacks], square.model_dump()]})
    query = _evidence(with_square)["MITRE ATLAS AML.T0043.001"]
    assert query.status == "addressed" and query.rows == ["query-only attacker (Square)"]
    assert _evidence(with_square)["MITRE ATLAS AML.T0015"].status == "addressed"  # white-box and black-box
    auto = metrics.attacks[1].model_copy(update={"key": "autoattack@8/255", "attack": "autoattack"})
    with_auto = RunMetrics.model_validate({**metrics.model_dump(), "attacks": [auto.model_dump()]})
    inside = _evidence(with_auto)["MITRE ATLAS AML.T0043.001"]
    assert inside.status == "partly" and "inside AutoAttack" in inside.gaps[0]


def test_a_guard_whose_guard_aware_attacker_did_not_run_is_no_adaptive_evaluation() -> None:
    from dataclasses import replace

    rows = build_scorecard(make_metrics(transfer=False, defenses=False)).rows
    facts = run_facts(make_metrics(transfer=False, defenses=False), rows, None)
    assert not facts.adaptive_mitigation
    guarded = rows[0].model_copy(update={"threat_model": "guarded", "label": "squeeze, guard-aware attacker"})
    assert replace(facts, rows=(*rows, guarded), guard_adaptive=True).adaptive_mitigation
    assert not replace(facts, rows=(*rows, guarded), guard_adaptive=False).adaptive_mitigation


def test_every_evidence_name_is_on_the_scorecard_and_nothing_claims_compliance(complete, white_box_only) -> None:
    card = build_scorecard(make_metrics())
    known = {r.label for r in card.rows} | {CERTIFIED_LABEL, CLEAN, PER_CLASS, DETECTION, BENIGN, SKIPPED}
    for evidence in (complete, white_box_only):
        for e in evidence.values():
            assert set(e.rows) <= known, e.rows
            assert e.status == "addressed" or e.gaps, e.requirement  # what is short of addressed says why
            words = " ".join([e.summary, *e.gaps]).lower()
            assert "complian" not in words and "complies" not in words and "conform" not in words
    assert card.definitions["evidence"] == DISCLAIMER and "does not decide compliance" in DISCLAIMER


def test_a_black_box_s_adaptive_row_is_no_white_box_evidence() -> None:
    """A black box's defended row was attacked by Square: white-box optimisation (AML.T0043.000) is
    not addressed by it (found on an ONNX model's run, where it read 'addressed')."""
    from dataclasses import replace

    from medrobust.evaluation.evidence import REQUIREMENTS

    rows = build_scorecard(make_metrics(transfer=False)).rows
    facts = run_facts(make_metrics(transfer=False), rows, None)
    black_box = replace(facts, rows=tuple(r for r in rows if r.threat_model != "white-box"))
    rule = next(r for r in REQUIREMENTS if r.requirement == "MITRE ATLAS AML.T0043.000")
    assert any(r.threat_model == "adaptive" for r in black_box.rows)
    finding = rule.rule(black_box)
    assert finding.status == "not_addressed" and finding.rows == []
    assert rule.rule(facts).status == "addressed" and any(r.startswith("jpeg+tv, adaptive") for r in rule.rule(facts).rows)
