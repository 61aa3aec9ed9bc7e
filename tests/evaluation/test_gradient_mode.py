"""How the adaptive attacker goes through a defense: the forward values are the defense's own,
the backward pass the one its gradient mode names, and the report says which."""

from __future__ import annotations

import pytest
import torch

from medrobust.defenses import build_defense
from medrobust.defenses.defended import apply_defense, gradient_route, smooth_through, straight_through
from medrobust.defenses.jpeg import jpeg
from medrobust.defenses.jpeg_smooth import smooth_jpeg
from medrobust.defenses.total_variation import TotalVariation


def _input_gradient(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    weights = torch.linspace(-1, 1, x.numel()).reshape(x.shape)  # a fixed, non-trivial loss
    out = fn(x)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    return out.detach(), grad


@pytest.fixture
def x() -> torch.Tensor:
    return (torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(5)) * 255).round() / 255


def test_unrolled_is_bpda_through_jpeg_and_exact_through_tv(x) -> None:
    hybrid = build_defense("jpeg+tv")
    out, grad = _input_gradient(lambda v: apply_defense(hybrid, v, "unrolled"), x)
    exact_tv = TotalVariation(exact_gradients=True)
    ref_out, ref_grad = _input_gradient(lambda v: exact_tv(straight_through(jpeg(v), v)), x)
    assert torch.allclose(out, hybrid(x), atol=1e-6) and torch.allclose(out, ref_out, atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)
    _, bpda_grad = _input_gradient(lambda v: apply_defense(hybrid, v, "bpda"), x)
    assert not torch.allclose(grad, bpda_grad, atol=1e-3)  # the TV's own Jacobian, not the identity


def test_smooth_keeps_the_codecs_output_and_takes_the_smooth_jpegs_gradient(x) -> None:
    hybrid = build_defense("jpeg+tv")
    out, grad = _input_gradient(lambda v: apply_defense(hybrid, v, "smooth"), x)
    exact_tv = TotalVariation(exact_gradients=True)
    _, ref_grad = _input_gradient(lambda v: exact_tv(smooth_through(jpeg(v), smooth_jpeg(v, 75))), x)
    _, at_smooth = _input_gradient(lambda v: exact_tv(smooth_jpeg(v, 75)), x)  # TV's Jacobian at the smooth output
    assert torch.allclose(grad, at_smooth, atol=0.05) and not torch.allclose(grad, at_smooth, atol=1e-5)
    assert torch.allclose(out, hybrid(x), atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-5)
    jpeg_only = build_defense("jpeg")
    assert torch.equal(apply_defense(jpeg_only, x.clone().requires_grad_(True), "smooth").detach(), jpeg(x))


def test_the_route_is_named_member_by_member() -> None:
    assert gradient_route(build_defense("jpeg+tv"), "unrolled") == "BPDA (identity) through jpeg, exact through tv (unrolled)"
    assert gradient_route(build_defense("jpeg+tv"), "smooth") == \
        "BPDA (smooth approximation) through jpeg, exact through tv (unrolled)"
    assert gradient_route(build_defense("jpeg+tv"), "bpda") == "BPDA (identity) through jpeg+tv"
    assert gradient_route(build_defense("bits+median"), "unrolled") == "BPDA (identity) through bits, exact through median"
    assert gradient_route(build_defense("tvm"), "smooth") == "BPDA (identity) through tvm"
    assert gradient_route(build_defense("tv:exact_gradients=true"), "unrolled") == "exact through tv"
