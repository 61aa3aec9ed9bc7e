"""The iterative engine and FGSM / PGD / MI-FGSM: known answers, properties, effect."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from medrobust.attacks.budget import Budget, quantize_within
from medrobust.attacks.registry import build_attack, list_attacks
from medrobust.models.classifier import Classifier, InputContract, NotDifferentiableError
from medrobust.specs.components import parse_number

EPS = 8 / 255


class Linear(nn.Module):
    def __init__(self, n_in: int, n_out: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(n_in, n_out)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(n_out, n_in, generator=g))
            self.fc.bias.copy_(torch.randn(n_out, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def linear_classifier(kind: str = "softmax", k: int = 3, size: int = 6) -> Classifier:
    n_out = 1 if kind == "binary" else k
    classes = ("neg", "pos") if kind == "binary" else tuple("abcdefgh"[:k])
    contract = InputContract(classes=classes, network_channels=1, intensity="unit", output_kind=kind)
    return Classifier(Linear(size * size, n_out), contract).eval()


def tiny_cnn() -> Classifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    return Classifier(net, InputContract(classes=("a", "b", "c"), network_channels=1, intensity="unit")).eval()


def interior_images(n: int = 4, size: int = 6, seed: int = 0) -> torch.Tensor:
    return 0.3 + 0.4 * torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_fgsm_on_a_linear_softmax_model_is_eps_times_the_sign_of_the_analytic_gradient() -> None:
    model = linear_classifier()
    x = interior_images()
    y = torch.tensor([0, 1, 2, 0])
    w = model.network.fc.weight.detach()
    p = model.network(x).softmax(1).detach()
    analytic = ((p - nn.functional.one_hot(y, 3).float()) @ w).view_as(x)  # d CE / d x = W^T (p - e_y)
    x_adv = build_attack("fgsm", eps=EPS, quantize_bits=None)(model, x, y)
    assert torch.allclose(x_adv, x + EPS * analytic.sign(), atol=1e-7)


def test_fgsm_on_a_binary_logit_follows_the_weight_sign() -> None:
    model = linear_classifier("binary")
    x = interior_images()
    y = torch.tensor([1, 1, 0, 0])
    w = model.network.fc.weight.detach().view(1, 1, 6, 6)
    x_adv = build_attack("fgsm", eps=EPS, quantize_bits=None)(model, x, y)
    # d BCE / d x = (sigmoid(z) - y) w: pushes positives against w, negatives along it
    expected_sign = torch.where(y.view(-1, 1, 1, 1) == 1, -w.sign(), w.sign())
    assert torch.equal((x_adv - x).sign(), expected_sign.expand_as(x))


def test_multilabel_attack_moves_only_along_the_named_finding() -> None:
    model = linear_classifier("multilabel", k=3)
    x = interior_images()
    y = torch.tensor([[1, 0, 1]] * 4)
    x_adv = build_attack("fgsm", eps=EPS, quantize_bits=None, findings=["b"])(model, x, y)
    w_b = model.network.fc.weight.detach()[1].view(1, 1, 6, 6)
    # finding "b" is absent (0): the attack raises its logit, i.e. moves along w_b
    assert torch.equal((x_adv - x).sign(), w_b.sign().expand_as(x))
    with pytest.raises(ValueError, match="not among the model's classes"):
        build_attack("fgsm", findings=["zz"])(model, x, y)


def test_targeted_pgd_reaches_the_target_on_a_linear_model() -> None:
    model = linear_classifier()
    x = interior_images()
    target = torch.full((4,), 2)
    x_adv = build_attack("pgd", allow_large_eps=True, eps=0.3, steps=30, targeted=True, quantize_bits=None)(model, x, target)
    assert (model.predict(x_adv) == target).all()


ATTACKS = ["fgsm", "pgd", "mifgsm"]


@settings(max_examples=10, deadline=None)
@given(name=st.sampled_from(ATTACKS), seed=st.integers(0, 1000), eps_levels=st.integers(1, 16),
       norm=st.sampled_from(["linf", "l2"]), quantize=st.booleans())
def test_every_attack_respects_budget_range_shape_dtype_and_seed(name, seed, eps_levels, norm, quantize) -> None:
    model = tiny_cnn()
    g = torch.Generator().manual_seed(seed)
    x = torch.round(torch.rand(3, 1, 12, 12, generator=g) * 255) / 255  # stored 8-bit images
    y = torch.randint(0, 3, (3,), generator=g)
    eps = eps_levels / 255 if norm == "linf" else eps_levels / 50
    attack = build_attack(name, eps=eps, norm=norm, seed=seed, quantize_bits=8 if quantize else None)
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert Budget(eps, norm).contains(x_adv, x, tol=1e-5)
    if quantize:
        assert torch.allclose(x_adv * 255, torch.round(x_adv * 255), atol=1e-4)
    again = build_attack(name, eps=eps, norm=norm, seed=seed, quantize_bits=8 if quantize else None)(model, x, y)
    assert torch.equal(x_adv, again)


def test_pgd_seed_changes_the_random_start() -> None:
    model, x, y = tiny_cnn(), interior_images(2, 12), torch.tensor([0, 1])
    a = build_attack("pgd", seed=1, quantize_bits=None)(model, x, y)
    b = build_attack("pgd", seed=2, quantize_bits=None)(model, x, y)
    assert not torch.equal(a, b)


def test_model_mode_is_restored_and_inputs_untouched() -> None:
    model = tiny_cnn().train()
    x = interior_images(2, 12)
    before = x.clone()
    build_attack("pgd", steps=2)(model, x, torch.tensor([0, 1]))
    assert model.training and torch.equal(x, before)


def test_quantisation_stays_inside_the_ball() -> None:
    x = torch.tensor([[[[0.5 / 255, 100.2 / 255, 254.6 / 255]]]])  # not on the 8-bit grid
    x_adv = (x + torch.tensor([[[[3.6, -2.9, 2.0]]]]) / 255).clamp(0, 1)
    q = quantize_within(x_adv, x, Budget(3 / 255), bits=8)
    assert Budget(3 / 255).contains(q, x, tol=1e-7)
    assert torch.allclose(q * 255, torch.round(q * 255), atol=1e-4)


def test_black_box_models_are_refused_with_a_pointer_to_transfer_and_query_attacks() -> None:
    model = tiny_cnn()
    model.differentiable = False
    with pytest.raises(NotDifferentiableError, match="square"):
        build_attack("pgd")(model, interior_images(1, 12), torch.tensor([0]))


def test_registry_parses_specs_and_rejects_unknown_parameters() -> None:
    assert {"fgsm", "pgd", "mifgsm"} <= set(list_attacks())
    a = build_attack("pgd:eps=4/255,steps=3,random_start=false")
    assert a.eps == pytest.approx(4 / 255) and a.steps == 3 and a.random_start is False
    assert parse_number("8/255") == pytest.approx(8 / 255)
    with pytest.raises(ValueError, match="unknown parameter"):
        build_attack("pgd:epsilon=3")
    with pytest.raises(ValueError, match="unknown attack"):
        build_attack("cw")


def test_pgd_at_8_over_255_breaks_the_trained_small_cnn(trained_small_cnn, phantom32) -> None:
    splits, _ = phantom32
    x, y = splits["test"]
    clean = float((trained_small_cnn.predict(x) == y).float().mean())
    assert clean > 0.7
    x_adv = build_attack("pgd", eps=EPS, steps=10)(trained_small_cnn, x, y)
    assert float((trained_small_cnn.predict(x_adv) == y).float().mean()) < 0.10


def test_mifgsm_lowers_accuracy_substantially(trained_small_cnn, phantom32) -> None:
    splits, _ = phantom32
    x, y = splits["test"]
    clean = float((trained_small_cnn.predict(x) == y).float().mean())
    x_adv = build_attack("mifgsm", eps=EPS)(trained_small_cnn, x, y)
    adv = float((trained_small_cnn.predict(x_adv) == y).float().mean())
    assert adv < 0.5 * clean


def test_sia_lowers_accuracy_substantially(trained_small_cnn, phantom32) -> None:
    splits, _ = phantom32
    x, y = splits["test"]
    clean = float((trained_small_cnn.predict(x) == y).float().mean())
    x_adv = build_attack("sia", eps=EPS, n_copies=5)(trained_small_cnn, x, y)
    adv = float((trained_small_cnn.predict(x_adv) == y).float().mean())
    assert adv < 0.5 * clean
