"""SIA: the engine contract (budget, range, shape, dtype, seeds), MI-FGSM as its special case
(bit for bit), the registry spelling, and micro-batching of the copies."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medrobust.attacks.gradient_attacks import MIFGSM
from medrobust.attacks.registry import attack_parameters, build_attack, list_attacks
from medrobust.attacks.sia import SIA
from medrobust.attacks.sit import PAPER_OPS, TRANSFERATTACK_OPS
from medrobust.models.classifier import Classifier
from medrobust.models.zoo import build_classifier

EPS = 8 / 255


@pytest.fixture(scope="module")
def model() -> Classifier:
    torch.manual_seed(0)
    return build_classifier("small-cnn", ["a", "b", "c"], 32).eval()


def images(n: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_sia_is_registered_with_the_official_defaults() -> None:
    assert "sia" in list_attacks()
    params = attack_parameters("sia")
    assert params["eps"][1] == pytest.approx(16 / 255) and params["steps"][1] == 10 and params["mu"][1] == 1.0
    assert params["blocks"][1] == 3 and params["n_copies"][1] == 20 and params["ops"][1] == "paper"
    attack = SIA()
    assert attack.alpha == pytest.approx(1.6 / 255) and attack.op_names == list(PAPER_OPS)
    assert attack.describe()["n_copies"] == 20


def test_build_attack_parses_presets_and_op_lists(model: Classifier) -> None:
    attack = build_attack("sia:eps=8/255,n_copies=4,ops=transferattack")
    assert isinstance(attack, SIA)
    assert attack.eps == pytest.approx(EPS) and attack.n_copies == 4 and attack.op_names == list(TRANSFERATTACK_OPS)
    custom = build_attack("sia:ops=vertical_flip;scale,copies_per_batch=2,blocks=2,steps=2,n_copies=3")
    assert custom.op_names == ["vertical_flip", "scale"] and custom.copies_per_batch == 2 and custom.blocks == 2
    assert build_attack("sia:copies_per_batch=none").copies_per_batch is None
    x, y = images()
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= EPS + 1e-6
    with pytest.raises(ValueError, match="unknown SIT operation"):
        build_attack("sia:ops=swirl")
    with pytest.raises(ValueError, match="n_copies"):
        SIA(n_copies=0)
    with pytest.raises(ValueError, match="copies_per_batch"):
        SIA(copies_per_batch=0)


def test_budget_range_shape_dtype_and_a_real_change(model: Classifier) -> None:
    x, y = images(3)
    for bits in (8, None):
        x_adv = SIA(eps=EPS, steps=3, n_copies=3, quantize_bits=bits)(model, x, y)
        assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
        assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
        assert (x_adv != x).float().mean() > 0.5
        if bits == 8:
            assert torch.allclose(x_adv * 255, torch.round(x_adv * 255), atol=1e-4)


def test_sia_with_one_identity_copy_is_mifgsm_bit_for_bit(model: Classifier) -> None:
    x, y = images(3, seed=1)
    for bits in (8, None):
        expected = MIFGSM(eps=EPS, steps=4, mu=1.0, seed=3, quantize_bits=bits)(model, x, y)
        got = SIA(eps=EPS, steps=4, mu=1.0, n_copies=1, ops="identity", seed=3, quantize_bits=bits)(model, x, y)
        assert torch.equal(got, expected)
    # several identity copies give the same mean gradient up to rounding
    g1 = MIFGSM(eps=EPS).gradient(model, x, y, torch.Generator().manual_seed(0))
    g3 = SIA(eps=EPS, n_copies=3, ops="identity").gradient(model, x, y, torch.Generator().manual_seed(0))
    assert torch.allclose(g1, g3, rtol=1e-5, atol=1e-9)


def test_seeds_give_bit_identical_results_and_different_seeds_differ(model: Classifier) -> None:
    x, y = images()
    a = SIA(eps=EPS, steps=2, n_copies=3, seed=1, quantize_bits=None)(model, x, y)
    b = SIA(eps=EPS, steps=2, n_copies=3, seed=1, quantize_bits=None)(model, x, y)
    c = SIA(eps=EPS, steps=2, n_copies=3, seed=2, quantize_bits=None)(model, x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_micro_batching_the_copies_changes_only_rounding(model: Classifier) -> None:
    """The copies come from one plan per step, so micro-batches see the same copies; the gradient
    differs only in float summation order (and batch-size-dependent kernels), not bit for bit."""
    x, y = images(2, seed=2)
    whole = SIA(n_copies=6).gradient(model, x, y, torch.Generator().manual_seed(4))
    for per in (1, 4):
        parts = SIA(n_copies=6, copies_per_batch=per).gradient(model, x, y, torch.Generator().manual_seed(4))
        assert (parts - whole).abs().max() <= 1e-5 * whole.abs().max()
    a = SIA(eps=EPS, steps=3, n_copies=6)(model, x, y)
    b = SIA(eps=EPS, steps=3, n_copies=6, copies_per_batch=4)(model, x, y)
    assert (a != b).float().mean() < 0.01  # a sign can flip only where the gradient is ~0


def test_copies_are_copy_major_so_labels_line_up(model: Classifier) -> None:
    attack = SIA(n_copies=3, ops="identity")
    x, _ = images(2)
    batches = list(attack.transformed_batches(x, torch.Generator().manual_seed(0)))
    assert [k for _, k in batches] == [3]
    assert torch.equal(batches[0][0], x.repeat(3, 1, 1, 1))
    attack = SIA(n_copies=5, copies_per_batch=2)
    assert [k for _, k in attack.transformed_batches(x, torch.Generator().manual_seed(0))] == [2, 2, 1]


def test_targeted_sia_moves_towards_the_target(model: Classifier) -> None:
    x, _ = images(4, seed=5)
    target = torch.full((4,), 1)
    before = torch.log_softmax(model(x), 1)[:, 1]
    x_adv = SIA(eps=16 / 255, steps=5, n_copies=4, targeted=True, quantize_bits=None)(model, x, target)
    after = torch.log_softmax(model(x_adv), 1)[:, 1]
    assert (after > before).float().mean() >= 0.75


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 3), seed=st.integers(0, 2**16), eps=st.sampled_from([2 / 255, 8 / 255, 16 / 255]),
       ops=st.sampled_from(["paper", "transferattack", "scale;dct;resize"]))
def test_properties_on_small_random_inputs(model: Classifier, n: int, seed: int, eps: float, ops: str) -> None:
    x, y = images(n, seed=seed)
    attack = SIA(eps=eps, steps=2, n_copies=2, ops=ops, seed=seed)
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x_adv, attack(model, x, y))


@pytest.mark.gpu
def test_sia_runs_on_cuda(model: Classifier) -> None:
    net = build_classifier("small-cnn", ["a", "b", "c"], 32).cuda().eval()
    x, y = images(2)
    x_adv = SIA(eps=EPS, steps=2, n_copies=3, copies_per_batch=2)(net, x.cuda(), y.cuda())
    assert x_adv.device.type == "cuda" and (x_adv.cpu() - x).abs().max() <= EPS + 1e-6
