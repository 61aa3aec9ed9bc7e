"""How the adaptive attacker went through a defense is named for what it did."""

from __future__ import annotations

from medrobust.defenses import DefendedClassifier, build_defense
from medrobust.evaluation.stage_defenses import gradient_mode
from medrobust.models import build_classifier


def test_gradient_attacks_use_bpda_and_query_attacks_only_queries() -> None:
    model = build_classifier("small-cnn", ["Normal", "Pneumonia"], 32)
    defended = DefendedClassifier(build_defense("jpeg+tv"), model)
    assert gradient_mode(defended) == "bpda"
    assert gradient_mode(defended, needs_gradients=False) == "queries"
    randomised = DefendedClassifier(build_defense("tvm"), model, eot_samples=10)
    assert gradient_mode(randomised) == "bpda+eot(10)"
