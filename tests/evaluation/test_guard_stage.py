"""The ``guard`` stage (issue 28): Carlini & Wagner's guard-aware attacker against the guard as
``mr.guard`` serves it — the attacker's loss, the stage's figures on a tiny run, its resumption, the
decision rule shared with ``Guard.predict``, the scorecard row, the report, and the config refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medrobust as mr
from medrobust.attacks import PGD
from medrobust.attacks.detector_aware import DetectorAwarePGD
from medrobust.detection.squeeze import SqueezeDetector
from medrobust.evaluation.config import validate_config
from medrobust.evaluation.results import read_metrics
from medrobust.evaluation.scorecard import read_scorecard
from medrobust.execution import guard_units
from medrobust.execution.guard_units import detector_penalty
from medrobust.execution.pixels import from_stored
from medrobust.execution.resumable_stage import finished_summary
from medrobust.report.html import build_report

DEFENSE = "jpeg:quality=75+tv"
SETTINGS = {
    "attacks": [{"name": "apgd", "params": {"eps": "8/255", "steps": 5}}],
    "defenses": [DEFENSE], "adaptive": {"portfolio": ["transfer"], "masking_eps": None},
    "detectors": {"squeeze": {}}, "guard": {"steps": 3, "lambdas": [0, 10]},
    "attack_images": 8, "batch_size": 4, "data": {"size": 32},
}
DATA = "phantom:seed=7,per_class=6"


@pytest.fixture(scope="module")
def run(tmp_path_factory, trained_small_cnn):
    root = tmp_path_factory.mktemp("guard") / "run"
    metrics = mr.evaluate(trained_small_cnn, DATA, SETTINGS, run_dir=root)
    return root, metrics


def test_lambda_zero_is_the_plain_pgd_attack(trained_small_cnn, phantom32) -> None:
    x, y = phantom32[0]["test"]
    x, y = x[:4], y[:4]
    plain = PGD(eps=4 / 255, steps=3, alpha=1 / 255)(trained_small_cnn, x, y)
    aware = DetectorAwarePGD(eps=4 / 255, steps=3, alpha=1 / 255, lam=0.0,
                             penalty=lambda z: z.mean((1, 2, 3)) * 1e6)(trained_small_cnn, x, y)
    assert torch.equal(plain, aware)


def test_the_detector_term_lowers_the_score_of_a_flagged_image(trained_small_cnn, phantom32) -> None:
    x, y = phantom32[0]["test"][0][:4], phantom32[0]["test"][1][:4]
    det = SqueezeDetector(["bits:bits=5", "median:size=2"])  # BPDA through bit depth, exact through the median
    clean = det.score(trained_small_cnn, x)
    limit = torch.full((4,), float(clean.min()) / 2)  # every image flagged
    penalty = detector_penalty({"squeeze": det}, trained_small_cnn, {"squeeze": limit}, 0.1)
    scores = {}
    for lam in (0.0, 100.0):
        x_adv = DetectorAwarePGD(eps=8 / 255, steps=5, lam=lam, penalty=penalty)(trained_small_cnn, x, y)
        scores[lam] = det.score(trained_small_cnn, x_adv)
    assert scores[100.0].mean() < clean.mean()
    assert scores[100.0].mean() < scores[0.0].mean()


def test_the_figures_add_up_and_the_worst_case_is_at_least_each_member(run) -> None:
    _, metrics = run
    g = metrics.guard
    assert g is not None and g.defense == DEFENSE and g.detectors == ["squeeze"] and g.on_flag == "abstain"
    assert [b.eps for b in g.budgets] == [pytest.approx(8 / 255)]
    assert "folds" in g.thresholds["squeeze"]  # split test: the detection stage's cross-fitted thresholds
    for b in g.budgets:
        assert b.n == 8
        assert b.evasion_rate + b.correct_accepted_rate + b.rejected_rate == pytest.approx(1.0)
        assert b.abstained_rate == pytest.approx(b.rejected_rate)  # on_flag abstain, nothing failed
        members = {m.name: m for m in b.members}
        assert set(members) == {"unchanged", "non-adaptive", "lambda=0", "lambda=10"}
        for m in members.values():
            assert b.evasion_rate >= m.evasion_rate - 1e-12
        assert sum(m.won for m in b.members) == round(b.evasion_rate * b.n)
        assert b.accepted == round((b.evasion_rate + b.correct_accepted_rate) * b.n)
    assert 0 <= g.clean.abstained_rate <= 1 and g.clean.n == 8


def test_the_stage_decides_as_guard_predict_does(run, trained_small_cnn) -> None:
    root, _ = run
    folder = next((root / "stages" / "guard").glob("*/guard-aware_pgd_8_255_lambda_10_3_steps"))
    summary = finished_summary(folder)
    images = np.concatenate([np.load(p)["x_adv"] for p in sorted(folder.glob("batch-*.npz"))])
    x = from_stored(images)
    for t in np.unique(summary["threshold__squeeze"]):
        pick = np.flatnonzero(summary["threshold__squeeze"] == t)
        guard = mr.guard(trained_small_cnn, defense=DEFENSE, detectors=[SqueezeDetector(threshold=float(t))])
        answers = guard.predict(x[pick])
        assert [a.decision for a in answers] == ["abstain" if f else "accept" for f in summary["flagged"][pick]]
        labels = [guard.classes[int(p)] for p in summary["pred"][pick]]
        assert [a.label for a in answers if a.decision == "accept"] == [
            label for label, f in zip(labels, summary["flagged"][pick]) if not f]


def test_a_resumed_run_recomputes_nothing(run, trained_small_cnn, monkeypatch) -> None:
    root, metrics = run
    (cached,) = (root / "stages" / "guard").glob("*/guard.json")
    cached.unlink()

    def refuse(self, bench):  # noqa: ANN001, ANN202
        raise AssertionError("a finished guard batch was computed again")

    monkeypatch.setattr(guard_units.GuardAttackUnit, "run", refuse)
    monkeypatch.setattr(guard_units.GuardJudgeUnit, "run", refuse)
    again = mr.evaluate(trained_small_cnn, DATA, SETTINGS, run_dir=root)
    assert again.guard.model_dump(exclude={"seconds_per_image"}) == metrics.guard.model_dump(
        exclude={"seconds_per_image"})


def test_the_scorecard_report_and_statement_carry_the_guard(run) -> None:
    root, _ = run
    build_report(root)
    g = read_metrics(root).guard
    row = read_scorecard(root).row("guarded")
    b = g.budgets[0]
    assert row.points[-1].accuracy == pytest.approx(1 - b.evasion_rate)
    assert row.clean_abstention_rate == pytest.approx(g.clean.abstained_rate)
    assert row.evasion_by_budget == {"8/255": pytest.approx(b.evasion_rate)}
    assert "guarded" in read_scorecard(root).definitions
    html = (root / "report.html").read_text()
    assert 'id="guard"' in html and "Guarded model" in html
    assert f"{100 * b.evasion_rate:.1f}%" in html and f"{100 * g.clean.abstained_rate:.1f}%" in html
    statement = (root / "statement.html").read_text()
    assert "evaluated as served" in statement and "guard-aware attacker" in statement


def test_guard_from_run_serves_the_stage_figures(run) -> None:
    from medrobust.layer.guard_from_run import run_figures

    root, metrics = run
    figures = run_figures(metrics, DEFENSE)["guard"]
    assert figures["budgets"][0]["evasion_rate"] == metrics.guard.budgets[0].evasion_rate
    assert figures["clean"]["abstention_rate"] == metrics.guard.clean.abstained_rate
    assert run_figures(metrics, "tv")["guard"] is None  # another defense: not what the stage measured


@pytest.mark.parametrize(("guard", "extra", "says"), [
    ({"detectors": ["reference"]}, {"detectors": {"reference": {}, "squeeze": {}}}, "has none"),
    ({"defense": "tv"}, {}, "not one of the run's defenses"),
    ({"detectors": ["squeeze"]}, {}, "detectors.squeeze is not configured"),
    ({}, {"defenses": [], "adaptive": {"enabled": False}}, "no defense and no detector"),
    ({"lambdas": []}, {}, "lambdas is empty"),
    ({"on_flag": "ignore"}, {}, "guard.on_flag"),
])
def test_a_guard_the_run_cannot_evaluate_is_refused(guard, extra, says) -> None:
    with pytest.raises(ValueError, match=says):
        validate_config({"guard": guard, **extra})
