"""The logit ensemble: weighted mean of the members' logits, gradients through every member,
clear refusals of members that do not fit together, and no white-box attack through a black box."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from medrobust.attacks.registry import build_attack
from medrobust.models.classifier import Classifier, NotDifferentiableError
from medrobust.models.ensemble import EnsembleClassifier

CLASSES = ("Normal", "Pneumonia", "Pneumothorax")


def test_ensemble_averages_logits_with_weights(linear_classifier) -> None:
    a, b = linear_classifier(0), linear_classifier(1)
    x = torch.rand(5, 1, 8, 8)
    ens = EnsembleClassifier([a, b], weights=[3, 1])
    assert isinstance(ens, Classifier) and ens.classes == list(CLASSES) and ens.differentiable
    torch.testing.assert_close(ens.logits(x), 0.75 * a.logits(x) + 0.25 * b.logits(x))
    torch.testing.assert_close(EnsembleClassifier([a, b]).logits(x), (a.logits(x) + b.logits(x)) / 2)
    assert ens.weights == [0.75, 0.25] and len(ens.members) == 2
    # gradients flow to the input through every member
    xg = x.clone().requires_grad_(True)
    ens(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_ensemble_refuses_mismatched_members(linear_classifier) -> None:
    a = linear_classifier(0)
    with pytest.raises(ValueError, match="classes"):
        EnsembleClassifier([a, linear_classifier(1, classes=("Pneumonia", "Normal", "Pneumothorax"))])
    with pytest.raises(ValueError, match="output kind"):
        EnsembleClassifier([a, linear_classifier(1, kind="multilabel")])
    with pytest.raises(ValueError, match="one weight per model"):
        EnsembleClassifier([a, linear_classifier(1)], weights=[1.0])
    with pytest.raises(ValueError, match="non-negative"):
        EnsembleClassifier([a, linear_classifier(1)], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="at least one"):
        EnsembleClassifier([])
    with pytest.raises(TypeError, match="not a Classifier"):
        EnsembleClassifier([a, nn.Linear(64, 3)])


def test_ensemble_with_a_black_box_member_is_not_differentiable(linear_classifier) -> None:
    a, b = linear_classifier(0), linear_classifier(1)
    b.differentiable = False
    ens = EnsembleClassifier([a, b])
    assert not ens.differentiable
    with pytest.raises(NotDifferentiableError):
        build_attack("pgd")(ens, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
