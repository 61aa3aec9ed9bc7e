"""Batch norms folded or frozen for an attack's duration: the same function and input gradient, the
user's modules back in place afterwards, and no fold where the data flow is not certain."""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from medrobust.attacks.batch_norm_folding import (
    ChannelShift,
    FoldedConv2d,
    FrozenBatchNorm2d,
    folded_batch_norms,
    folded_convolution,
)


def randomised_bn(channels: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(channels, generator=g) - 0.5)
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
        bn.weight.copy_(torch.rand(channels, generator=g) + 0.5)
        bn.bias.copy_(torch.rand(channels, generator=g) - 0.5)
    return bn.eval()


class Block(nn.Module):
    """A batch norm that follows a concatenation (as DenseNet's ``norm1``): frozen, not folded."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = randomised_bn(8, 3)
        self.conv = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.relu(self.bn(torch.cat([x, x], 1))))


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=True), randomised_bn(4, 1), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, stride=2, bias=False), randomised_bn(4, 2), Block(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def value_and_input_gradient(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xv = x.detach().requires_grad_(True)
    out = net(xv)
    (grad,) = torch.autograd.grad((out * torch.tensor([1.0, -2.0, 0.5])).sum(), xv)
    return out.detach(), grad


def test_folding_keeps_the_function_and_the_input_gradient_and_restores_the_modules() -> None:
    net = network()
    x = torch.rand(3, 2, 12, 12, generator=torch.Generator().manual_seed(0))
    expected = value_and_input_gradient(net, x)
    modules = list(net.modules())
    with folded_batch_norms(net, x) as changed:
        assert changed == 5  # two convolutions and their batch norms, and the batch norm after cat
        kinds = [type(m) for m in net]
        assert kinds[:5] == [FoldedConv2d, nn.Identity, nn.ReLU, FoldedConv2d, nn.Identity]
        assert isinstance(net[5].bn, FrozenBatchNorm2d)
        value, grad = value_and_input_gradient(net, x)
    assert torch.allclose(value, expected[0], rtol=1e-5, atol=1e-6)
    assert torch.allclose(grad, expected[1], rtol=1e-4, atol=1e-6)
    assert list(net.modules()) == modules  # the same module objects, in their places


def test_the_folded_convolution_is_conv_then_batch_norm() -> None:
    torch.manual_seed(0)
    for bias in (True, False):
        conv, bn = nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=bias), randomised_bn(5, 7)
        z = torch.rand(2, 3, 9, 9)
        folded = folded_convolution(conv, bn)
        assert list(folded.parameters()) == []  # nothing for autograd to record
        assert torch.allclose(folded(z), bn(conv(z)), rtol=1e-5, atol=1e-6)


def test_the_frozen_batch_norm_has_batch_norms_forward_and_input_gradient() -> None:
    bn = randomised_bn(4, 5)
    x = torch.rand(2, 4, 5, 5, requires_grad=True)
    weights = torch.rand(2, 4, 5, 5)
    (expected,) = torch.autograd.grad((bn(x) * weights).sum(), x)
    frozen = FrozenBatchNorm2d(bn)
    out = frozen(x)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    assert torch.equal(out, bn(x)) and torch.allclose(grad, expected, rtol=1e-6, atol=1e-7)


class Reuses(nn.Module):
    """Calls the convolution of its Sequential on its own too: folding it would change the result."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.seq = nn.Sequential(nn.Conv2d(1, 2, 3), randomised_bn(2, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.seq(x) + self.seq[0](x)).flatten(1)


def test_a_fold_the_rules_cannot_see_is_caught_by_the_probe(caplog) -> None:
    model = Reuses().eval()
    x = torch.rand(2, 1, 6, 6)
    expected = model(x)
    with caplog.at_level(logging.WARNING), folded_batch_norms(model, x) as changed:
        assert changed == 0 and type(model.seq[0]) is nn.Conv2d
        assert torch.equal(model(x), expected)
    assert "running the model as it is" in caplog.text


def test_what_is_left_alone() -> None:
    class OwnForward(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self[1](self[0](x) * 2)

    torch.manual_seed(0)
    own = OwnForward(nn.Conv2d(1, 2, 3), randomised_bn(2, 1)).eval()
    with folded_batch_norms(own, torch.rand(1, 1, 5, 5)) as changed:
        assert changed == 1 and type(own[0]) is nn.Conv2d and isinstance(own[1], FrozenBatchNorm2d)  # frozen only
    training = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
    with folded_batch_norms(training, torch.rand(1, 1, 5, 5)) as changed:
        assert changed == 0  # batch statistics: not an affine map
    hooked = nn.Sequential(nn.Conv2d(1, 2, 3), randomised_bn(2, 1)).eval()
    hooked[1].register_forward_hook(lambda *args: None)
    with folded_batch_norms(hooked, torch.rand(1, 1, 5, 5)) as changed:
        assert changed == 0  # the user's hook must keep firing


def pre_activation(negative_gamma: bool) -> nn.Sequential:
    """DenseNet's dense layer: batch norm, ReLU, convolution (padded), batch norm, ReLU, convolution."""
    torch.manual_seed(2)
    first = randomised_bn(3, 8)
    if negative_gamma:
        with torch.no_grad():
            first.weight[1] = -0.7
    return nn.Sequential(first, nn.ReLU(inplace=True), nn.Conv2d(3, 4, 3, padding=1), randomised_bn(4, 9),
                         nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3, padding=1, bias=False)).eval()


def test_a_batch_norm_before_relu_and_convolution_leaves_a_shift_and_its_scale_moves_into_the_convolution() -> None:
    x = torch.rand(2, 3, 7, 7, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for negative_gamma in (False, True):
        net = pre_activation(negative_gamma)
        model = nn.Sequential(net, nn.Flatten(), nn.Linear(2 * 7 * 7, 3)).eval()
        expected = value_and_input_gradient(model, x)
        with folded_batch_norms(model, x) as changed:
            # relu(a z + b) = a relu(z + b / a) needs a > 0 in every channel; else the batch norm is frozen
            first = FrozenBatchNorm2d if negative_gamma else ChannelShift
            assert [type(m) for m in net] == [first, nn.ReLU, FoldedConv2d, nn.Identity, nn.ReLU, nn.Conv2d]
            assert changed == 3
            value, grad = value_and_input_gradient(model, x)
        assert torch.allclose(value, expected[0], rtol=1e-5, atol=1e-6)
        assert torch.allclose(grad, expected[1], rtol=1e-4, atol=1e-6)


def test_the_probe_runs_once_per_model_and_structure() -> None:
    net = network()
    x = torch.rand(1, 2, 12, 12)
    calls: list[int] = []
    net.register_forward_pre_hook(lambda module, args: calls.append(1))
    for expected in (2, 2):  # with and without the rewrite, the first time only
        with folded_batch_norms(net, x):
            pass
        assert len(calls) == expected
    net[8] = nn.Linear(4, 3)  # another structure: checked again
    with folded_batch_norms(net, x):
        pass
    assert len(calls) == 4
