"""DefendedClassifier: predictions, BPDA, exact gradients and EOT with the attack engine."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medrobust.attacks.registry import build_attack
from medrobust.defenses.base import Defense
from medrobust.defenses.defended import DefendedClassifier, apply_defense
from medrobust.defenses.jpeg import JPEG
from medrobust.defenses.registry import build_defense
from medrobust.defenses.squeezers import MedianFilter
from medrobust.defenses.total_variation import TotalVariation
from medrobust.defenses.tvm import RandomizedTVM
from medrobust.models.classifier import Classifier

from .helpers import make_linear_classifier


def _images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _input_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return grad


def test_is_a_classifier_that_predicts_like_classifier_of_defense(linear_classifier) -> None:
    defense = build_defense("jpeg:quality=50+tv")
    model = DefendedClassifier(defense, linear_classifier)
    assert isinstance(model, Classifier)
    assert model.classes == linear_classifier.classes and model.output_kind == linear_classifier.output_kind
    assert model.network is linear_classifier.network and model.differentiable
    x = _images()
    with torch.no_grad():
        assert torch.equal(model(x), linear_classifier(defense(x)))
    assert torch.equal(model.predict(x), linear_classifier.predict(defense(x)))
    assert model.metadata["defense"] == defense.spec()


def test_a_spec_string_is_accepted(linear_classifier) -> None:
    model = DefendedClassifier("bits:bits=3", linear_classifier)
    assert model.defense.name == "bits" and model.eot_samples == 1


def test_bpda_gradient_is_the_classifier_gradient_at_the_defended_image(linear_classifier) -> None:
    x, y = _images(), torch.tensor([0, 1, 2, 1])
    for defense in (JPEG(50), TotalVariation(weight=0.3), build_defense("bits:bits=3")):
        model = DefendedClassifier(defense, linear_classifier, gradient="bpda")
        expected = _input_gradient(linear_classifier, defense(x), y)
        assert torch.allclose(_input_gradient(model, x, y), expected, atol=1e-6)


def test_auto_uses_bpda_for_non_differentiable_and_exact_for_differentiable(linear_classifier) -> None:
    x, y = _images(), torch.tensor([0, 1, 2, 1])
    median = MedianFilter(3)
    exact = _input_gradient(DefendedClassifier(median, linear_classifier), x, y)
    by_hand = x.clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(F.cross_entropy(linear_classifier(median(by_hand)), y, reduction="sum"), by_hand)
    assert torch.allclose(exact, reference)
    bpda = _input_gradient(DefendedClassifier(median, linear_classifier, gradient="bpda"), x, y)
    assert not torch.allclose(exact, bpda, atol=1e-3)


def test_exact_gradients_through_tv_differ_from_bpda(linear_classifier) -> None:
    x, y = _images(), torch.tensor([0, 1, 2, 1])
    tv = TotalVariation(weight=0.5, exact_gradients=True)
    exact = _input_gradient(DefendedClassifier(tv, linear_classifier, gradient="exact"), x, y)
    bpda = _input_gradient(DefendedClassifier(tv, linear_classifier, gradient="bpda"), x, y)
    assert (exact - bpda).norm() > 0.1 * bpda.norm()
    # TV smooths, so the exact input gradient is smoother than the BPDA one
    from medrobust.defenses.tv_operators import total_variation

    assert total_variation(exact).sum() < total_variation(bpda).sum()


def test_exact_mode_is_refused_for_a_non_differentiable_defense(linear_classifier) -> None:
    with pytest.raises(ValueError, match="no exact gradients"):
        DefendedClassifier(JPEG(), linear_classifier, gradient="exact")
    with pytest.raises(ValueError, match="gradient must be one of"):
        DefendedClassifier(JPEG(), linear_classifier, gradient="magic")


def test_auto_in_a_composition_goes_member_by_member(linear_classifier) -> None:
    x, y = _images(), torch.tensor([0, 1, 2, 1])
    defense = build_defense("bits:bits=4+median:size=3")
    model = DefendedClassifier(defense, linear_classifier)
    # BPDA through bits (identity), exact through the median: the gradient of classifier(median(z)) at z = bits(x)
    z = defense[0](x).requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(linear_classifier(defense[1](z)), y, reduction="sum"), z)
    assert torch.allclose(_input_gradient(model, x, y), expected)


class _Flip(Defense):
    """A toy randomized defense: each image is mirrored left-right with probability 1/2."""

    name = "flip"
    randomized = True
    differentiable = True

    def __init__(self, seed: int | None = 0) -> None:
        super().__init__(seed=seed)

    def transform(self, x, generator):
        flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


@pytest.mark.parametrize("defense_factory", [lambda: RandomizedTVM(seed=3, max_iter=20), lambda: _Flip(seed=3)])
def test_eot_gradient_is_the_mean_of_per_draw_gradients(linear_classifier, defense_factory) -> None:
    x, y = _images(3), torch.tensor([0, 2, 1])
    defense = defense_factory()
    model = DefendedClassifier(defense, linear_classifier, eot_samples=4)
    attack = build_attack("pgd", eps=8 / 255, steps=1)
    engine = attack.gradient(model, x, y, attack.make_generator(x.device))
    defense.manual_seed(3)
    draws = [_input_gradient(model, x, y) for _ in range(4)]
    assert torch.allclose(engine, torch.stack(draws).mean(0), atol=1e-6)
    assert not all(torch.allclose(draws[0], d) for d in draws[1:])  # the draws really differ


def test_eot_defaults(linear_classifier) -> None:
    assert DefendedClassifier(RandomizedTVM(), linear_classifier).eot_samples == 10
    assert DefendedClassifier("jpeg+tvm", linear_classifier).eot_samples == 10
    assert DefendedClassifier(JPEG(), linear_classifier).eot_samples == 1
    assert DefendedClassifier(RandomizedTVM(), linear_classifier, eot_samples=3).eot_samples == 3
    with pytest.raises(ValueError):
        DefendedClassifier(RandomizedTVM(), linear_classifier, eot_samples=0)


def test_adaptive_pgd_runs_through_the_hybrid_defense(linear_classifier) -> None:
    x, y = _images(3), torch.tensor([0, 1, 2])
    model = DefendedClassifier("jpeg:quality=50+tv", linear_classifier)
    x_adv = build_attack("pgd", eps=8 / 255, steps=3)(model, x, y)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 8 / 255 + 1e-6


def test_apply_defense_without_autograd_is_the_defense(phantoms) -> None:
    defense = JPEG(40)
    assert torch.equal(apply_defense(defense, phantoms, "bpda"), defense(phantoms))


def test_three_channel_classifier() -> None:
    classifier = make_linear_classifier(size=8, channels=3)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    model = DefendedClassifier("jpeg+tv", classifier)
    with torch.no_grad():
        assert torch.equal(model(x), classifier(model.defense(x)))
