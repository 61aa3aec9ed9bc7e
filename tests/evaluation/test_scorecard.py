"""The scorecard: its schema, what it says when evidence is missing, and that it separates a
normally trained model from an adversarially trained one (Madry et al. 2018), which the old
score (0 / 100 for both) could not."""

from __future__ import annotations

import json

import pytest
import torch

import medrobust as mr
from medrobust.attacks import build_attack
from medrobust.evaluation.scorecard import SCHEMA_VERSION, Scorecard, read_scorecard
from medrobust.models import TrainConfig, build_classifier, train_classifier
from medrobust.models.augment import AugmentConfig
from tests.evaluation.test_scorecard_file import validate

SWEEP = ["1/255", "2/255", "4/255", "8/255"]
SETTINGS = {
    "attacks": [{"name": "pgd", "params": {"eps": "8/255", "steps": 10}, "eps_sweep": SWEEP}],
    "defenses": ["jpeg+tv"], "detectors": {"reference": {}},
    "adaptive": {"eps_sweep": SWEEP, "portfolio": ["unrolled", "transfer"], "restarts": 1, "max_steps": 20},
    "attack_images": 60, "data": {"size": 32},
}
DATA = "phantom:seed=7,per_class=20"  # 60 phantoms none of the models trained on


@pytest.fixture(scope="module")
def adversarially_trained(phantom32):
    """The conftest's small CNN recipe, trained on PGD examples (4/255, 3 steps) instead."""
    splits, classes = phantom32
    torch.manual_seed(0)
    model = build_classifier("small-cnn", classes, 32)
    config = TrainConfig(epochs=20, batch_size=32, lr=3e-3, seed=0, augment=AugmentConfig(True, 0, 0, 0, 0),
                         early_stopping_patience=20)
    train_classifier(model, splits["train"], splits["val"], config, adversary=build_attack("pgd:eps=4/255,steps=3"))
    return model.eval()


@pytest.fixture(scope="module")
def scorecards(tmp_path_factory, trained_small_cnn, adversarially_trained):
    root = tmp_path_factory.mktemp("scorecards")
    out = {}
    for name, model in (("normal", trained_small_cnn), ("adversarial", adversarially_trained)):
        mr.evaluate(model, DATA, SETTINGS, run_dir=root / name)
        out[name] = read_scorecard(root / name)
    return root, out


def test_adversarial_training_scores_clearly_higher_on_the_white_box_row(scorecards) -> None:
    _, cards = scorecards
    normal, robust = cards["normal"].row("white-box"), cards["adversarial"].row("white-box")
    # observed here: 18.3 (normal) vs 56.0 (adversarial), a margin of 37.7 points; asserted: 15
    assert robust.score - normal.score >= 15
    assert robust.half_accuracy_budget is None or robust.half_accuracy_budget > normal.half_accuracy_budget
    assert cards["adversarial"].overall == robust.score_low  # the only undefended threat model, its lower bound


def test_the_adaptive_row_never_reads_better_than_the_non_adaptive_one(scorecards) -> None:
    _, cards = scorecards
    for card in cards.values():
        plain = card.row("non-adaptive")
        adaptive = card.row("adaptive")
        # both measured on the undefended model's grid (the sweep's images defended; the portfolio at each budget)
        assert [p.grey_levels for p in plain.points] == [p.grey_levels for p in adaptive.points] == [1, 2, 4, 8]
        assert adaptive.score <= plain.score
        assert [p.accuracy for p in adaptive.points][-1] <= [p.accuracy for p in plain.points][-1]


def test_schema_and_missing_evidence(scorecards) -> None:
    root, cards = scorecards
    raw = json.loads((root / "normal" / "scorecard.json").read_text())
    assert raw["schema_version"] == SCHEMA_VERSION == 2  # 2: the requirements traced (evidence) were added
    assert set(raw) == set(Scorecard.model_fields)
    assert Scorecard.model_validate(raw) == cards["normal"]
    validate(raw)  # a real run's file against the published JSON schema (docs/scorecard.schema.json)
    evidence = {e.requirement: e.status for e in cards["normal"].evidence}
    # white-box and an adaptive attacker against jpeg+tv, but no black-box attacker: Art. 15(5) only partly
    assert evidence["EU AI Act Art. 15(5)"] == "partly" and evidence["ISO/IEC 24029 formal methods"] == "not_addressed"
    row = cards["normal"].row("white-box")
    assert [p.grey_levels for p in row.points] == [1, 2, 4, 8]
    assert all(a >= b for a, b in zip([p.accuracy for p in row.points], [p.accuracy for p in row.points][1:]))
    assert row.clean_interval[0] <= row.clean_accuracy <= row.clean_interval[1]
    assert row.dangerous_flip_rate is not None and "of" in row.dangerous_flips_text
    assert [d.detector for d in row.detection] == ["reference"]
    missing = " ".join(cards["normal"].not_tested)
    assert "no surrogate given" in missing and "Square" in missing and "squeeze detector: not tested (not configured)" \
        in missing
    assert {r.threat_model for r in cards["normal"].rows} == {"white-box", "non-adaptive", "adaptive"}
    metrics = json.loads((root / "normal" / "metrics.json").read_text())
    assert metrics["robustness_score"]["value"] == pytest.approx(round(cards["normal"].overall, 1))
    assert len(metrics["model"]["sha256"] or "") in (0, 64)


def test_defenses_without_their_adaptive_attacker_are_refused_not_skipped():
    from medrobust.evaluation.config import ExperimentConfig

    with pytest.raises(ValueError, match="adaptive.enabled is false"):
        ExperimentConfig.model_validate({"defenses": ["jpeg+tv"], "adaptive": {"enabled": False}})
    ExperimentConfig.model_validate({"defenses": [], "adaptive": {"enabled": False}})


class _AlwaysPneumonia(torch.nn.Module):
    """A model without skill: the same answer for every image (gradients exist, and are zero)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([0.0, 3.0, 0.0]) + 0.0 * x.mean(dim=(1, 2, 3), keepdim=False)[:, None]


def test_a_model_without_skill_gets_no_score_not_a_perfect_one(tmp_path) -> None:
    metrics = mr.evaluate(_AlwaysPneumonia(), "phantom:seed=3,per_class=8", preset="quick", run_dir=tmp_path / "run",
                          size=32, classes=["Normal", "Pneumonia", "Pneumothorax"])
    assert metrics.baseline.accuracy == pytest.approx(1 / 3)
    card = read_scorecard(tmp_path / "run")
    assert card.overall is None and card.overall_text.startswith("not assessed: clean accuracy 33.3%")
    assert "always answering" in card.overall_text and card.rows
    assert all(row.score is None and row.score_text.startswith("not assessed: the model does not tell") for row in card.rows)
    assert card.overall_text not in card.not_tested  # said once, as the overall score
    assert metrics.robustness_score.value is None


def test_no_skill_compares_with_the_most_frequent_class() -> None:
    from medrobust.evaluation.results import ClassificationReport
    from medrobust.evaluation.scorecard import no_skill

    def report(matrix):
        n = sum(map(sum, matrix))
        return ClassificationReport(n=n, accuracy=sum(matrix[i][i] for i in range(len(matrix))) / n,
                                    classes=["Normal", "Pneumonia"], confusion_matrix=matrix, per_class={})

    assert no_skill(report([[90, 0], [10, 0]])) is not None  # 90% by always answering Normal on 90% Normal
    assert "always answering Normal" in no_skill(report([[90, 0], [10, 0]]))
    assert no_skill(report([[6, 4], [4, 6]])) is not None  # 60% of 20: the interval reaches 50%
    assert no_skill(report([[45, 5], [5, 45]])) is None  # 90% of 100 on balanced data


def test_a_row_tested_at_one_budget_gets_no_score_and_no_interpolated_half_budget() -> None:
    """Tested only at 8/255, a model at 0% there would score exactly 50 (the straight line from its
    clean accuracy) and "half accuracy at 4.00 grey levels", whatever it does below 8/255."""
    from medrobust.evaluation.scorecard import _row

    class _Metrics:  # only what _row reads
        detectors: list = []

    row = _row("white-box", "w", 0.9, 50, [(8 / 255, 0.0, "pgd@8/255")], 8 / 255, None, _Metrics(),
               flips_override="n/a")
    assert row.score is None
    assert row.score_text == "not defined: tested at fewer than 3 budgets up to 8/255 (only 8/255)"
    assert row.half_accuracy_budget is None and row.half_accuracy_text.startswith("between 0 and 8 grey levels")
    swept = _row("white-box", "w", 0.9, 50, [(e / 255, 0.0, f"pgd@{e}/255") for e in (1, 2, 4, 8)], 8 / 255, None,
                 _Metrics(), flips_override="n/a")
    assert swept.score == pytest.approx(100 * (0.5 / 255 * 0.9) / (0.9 * 8 / 255))  # the triangle up to 1/255
    assert swept.half_accuracy_text == "0.50 grey levels"


def _detector(**overrides):
    from medrobust.evaluation.results import DetectorOutcome

    values = {"name": "reference", "threshold": {}, "detection_rate": {"pgd@8/255": 0.75}, "fpr_clean": 0.0,
              "fpr_benign": {"jpeg90": 0.05, "resize": 0.3125}, "roc_auc": {"pgd@8/255": 0.9}, "roc": {}, "reasons": {},
              "latency_ms_per_image": 1.0}
    return DetectorOutcome(**{**values, **overrides})


def test_a_detector_s_false_alarms_are_its_worst_over_clean_and_benign_changes() -> None:
    from medrobust.evaluation.scorecard import detector_rate

    rate = detector_rate(_detector(), "pgd@8/255")
    assert rate.false_alarm_rate == 0.3125 and rate.false_alarms_on == "benign change: resize"  # not clean's 0.0
    assert rate.note is None


def test_a_detector_at_or_below_chance_is_said_to_be() -> None:
    from medrobust.evaluation.scorecard import detector_rate

    below = detector_rate(_detector(roc_auc={"pgd@8/255": 0.45}), "pgd@8/255")
    assert below.note == "no better than chance: ROC-AUC 0.45"
    flat = detector_rate(_detector(detection_rate={"pgd@8/255": 0.25}), "pgd@8/255")
    assert flat.note == "no better than chance: it flags 25.0% of attacked images and 31.2% of resize images"
