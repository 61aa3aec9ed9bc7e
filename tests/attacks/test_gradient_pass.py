"""The engine's fast path (:mod:`medrobust.attacks.gradient_pass`): the same gradients and images as
the plain path, the user's model left as it was, and the pass sizes it picks."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn as nn

from medrobust.attacks import MIFGSM, PGD, SIA
from medrobust.attacks.gradient_pass import (
    MIN_IMAGES_PER_PASS,
    PIXELS_PER_PASS,
    GradientExecution,
    draws_randomness,
    frozen_parameters,
    input_gradient,
)
from medrobust.attacks.sit import SITPlan, apply_structure_invariant_plan
from medrobust.defenses.defended import DefendedClassifier
from medrobust.models.batched_prediction import eval_mode
from medrobust.models.classifier import Classifier, InputContract, network_memory_format

SIZE = 20
PLAIN = GradientExecution.plain()


def bn_cnn(seed: int = 0) -> Classifier:
    """A tiny 3-channel network with batch norm (non-trivial running statistics) behind the
    radiograph contract: grey channel repeated, ImageNet normalisation, as the zoo's DenseNet."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2),
                        nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return Classifier(net, InputContract(("a", "b", "c"))).eval()


def images(n: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, SIZE, SIZE, generator=g), torch.randint(0, 3, (n,), generator=g)


def with_execution(attack, execution: GradientExecution):
    attack.execution = execution
    return attack


def one_gradient(attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, execution: GradientExecution) -> torch.Tensor:
    """One engine gradient with ``execution``, with the generator seeded the same every time."""
    attack = with_execution(attack, execution)
    with eval_mode(model), torch.enable_grad(), execution.running(model, x):
        return attack.gradient(model, x, y, torch.Generator().manual_seed(3))


FAST = [GradientExecution(), GradientExecution(images_per_pass=4), GradientExecution(channels_last=True, images_per_pass=1),
        GradientExecution(freeze_parameters=True, images_per_pass=5), GradientExecution(fold_batch_norm=False)]


@pytest.mark.parametrize("execution", FAST, ids=["default", "passes-of-4", "cl-passes-of-1", "frozen-passes-of-5", "unfolded"])
@pytest.mark.parametrize("make_attack", [lambda: SIA(steps=1, n_copies=4), lambda: PGD(steps=1)], ids=["sia", "pgd"])
def test_the_fast_path_gives_the_plain_gradient(execution: GradientExecution, make_attack) -> None:
    model = bn_cnn()
    x, y = images()
    attack = make_attack()
    plain = one_gradient(attack, model, x, y, PLAIN)
    fast = one_gradient(attack, model, x, y, execution)
    assert fast.shape == x.shape and fast.dtype == x.dtype
    assert torch.allclose(fast, plain, rtol=1e-4, atol=1e-6 * float(plain.abs().max())), float((fast - plain).abs().max())


def test_the_fast_path_gives_the_plain_adversarial_images() -> None:
    model = bn_cnn()
    x, y = images(4)
    for make in (lambda: SIA(eps=8 / 255, steps=3, n_copies=5), lambda: MIFGSM(steps=3)):
        fast = with_execution(make(), GradientExecution(images_per_pass=7))(model, x, y)
        plain = with_execution(make(), PLAIN)(model, x, y)
        default = make()(model, x, y)
        # only float summation order differs: a pixel whose gradient is ~0 might flip its sign
        assert (fast == plain).float().mean() >= 0.99 and (default == plain).float().mean() >= 0.99


def test_input_gradient_in_passes_is_the_chain_rule_of_one_pass() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.LazyLinear(2))
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    plan = SITPlan.sample(x.shape, 3, 2, "paper", torch.Generator().manual_seed(1))
    copies = apply_structure_invariant_plan(x, plan)  # 6 copies, a function of x
    weights = torch.linspace(0.5, 2.0, 6)

    def loss_of(part: torch.Tensor, rows: slice) -> torch.Tensor:
        return (net(part).square().sum(1) * weights[rows]).sum()

    (expected,) = torch.autograd.grad(loss_of(copies, slice(0, 6)), x, retain_graph=True)
    for per_pass in (1, 4, 6, 100):
        assert torch.allclose(input_gradient(loss_of, copies, x, per_pass), expected, rtol=1e-5, atol=1e-7)
    leaf = x.detach().repeat(3, 1, 1, 1).requires_grad_(True)  # the identity transform: inputs are wrt
    (direct,) = torch.autograd.grad(loss_of(leaf, slice(0, 6)), leaf)
    assert torch.allclose(input_gradient(loss_of, leaf, leaf, 4), direct, rtol=1e-6, atol=1e-8)


def test_the_engine_gradient_matches_autograd_on_a_linear_model() -> None:
    """d CE / d x = W^T (softmax(Wx + b) - e_y), through the fast path, in passes of 1."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 3))
    model = Classifier(net, InputContract(("a", "b", "c"), network_channels=1, intensity="unit")).eval()
    x, y = images(3)
    p = net(x).softmax(1).detach()
    analytic = ((p - nn.functional.one_hot(y, 3).float()) @ net[1].weight.detach()).view_as(x)
    fast = one_gradient(PGD(steps=1), model, x, y, GradientExecution(images_per_pass=1))
    assert torch.allclose(fast, analytic, rtol=1e-5, atol=1e-7)


def test_the_users_model_is_left_as_it_was() -> None:
    model = bn_cnn()
    model.network[0].weight.requires_grad_(False)  # the user froze the first layer
    model.network[3].to(memory_format=torch.channels_last)  # and keeps one layer channels-last
    model.train()
    before = {name: (p, p.detach().clone(), p.requires_grad, p.stride()) for name, p in model.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    x, y = images()
    seen = []
    model.network.register_forward_pre_hook(lambda m, args: seen.append(
        (any(p.requires_grad for p in m.parameters()), args[0].is_contiguous(memory_format=torch.channels_last),
         sum(isinstance(c, nn.BatchNorm2d) for c in m.modules()))))
    SIA(steps=2, n_copies=3)(model, x, y)
    probe_before_folding, *attack = seen
    assert probe_before_folding[2] == 2 and all(channels_last and batch_norms == 0 for _, channels_last, batch_norms in attack)
    seen.clear()
    with_execution(SIA(steps=2, n_copies=3), GradientExecution(freeze_parameters=True))(model, x, y)
    assert seen and all(not grad for grad, _, _ in seen)  # frozen during that attack
    assert model.training  # train mode restored
    for name, p in model.named_parameters():
        obj, value, requires_grad, stride = before[name]
        assert p is obj and torch.equal(p, value) and p.requires_grad == requires_grad and p.stride() == stride, name
    assert all(torch.equal(b, buffers[name]) for name, b in model.named_buffers())
    assert model.prepare(x).is_contiguous()  # the layout is the attack's business only


def test_the_model_is_restored_when_the_attack_fails() -> None:
    model = bn_cnn()
    calls = []

    def fail_on_second(module, args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")

    handle = model.register_forward_pre_hook(fail_on_second)
    with pytest.raises(RuntimeError, match="boom"):
        PGD(steps=3)(model, *images())
    handle.remove()
    assert all(p.requires_grad for p in model.parameters())
    assert model.prepare(images()[0]).is_contiguous()


def test_frozen_parameters_restores_only_what_it_froze() -> None:
    layer = nn.Linear(2, 2)
    layer.bias.requires_grad_(False)
    with frozen_parameters(layer):
        assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert layer.weight.requires_grad and not layer.bias.requires_grad


def test_network_memory_format_changes_the_layout_not_the_values_and_stays_in_its_thread() -> None:
    model = bn_cnn()
    x, _ = images()
    plain = model.prepare(x)
    other: list[bool] = []
    with network_memory_format(torch.channels_last):
        inside = model.prepare(x)
        worker = threading.Thread(target=lambda: other.append(model.prepare(x).is_contiguous()))
        worker.start()
        worker.join()
    assert inside.is_contiguous(memory_format=torch.channels_last) and not inside.is_contiguous()
    assert torch.equal(inside, plain) and other == [True] and model.prepare(x).is_contiguous()


def test_pass_sizes() -> None:
    model = bn_cnn()
    auto = GradientExecution()
    per = PIXELS_PER_PASS // (64 * 64)  # 128 images of 64 px
    assert auto.pass_size(model, torch.zeros(per, 1, 64, 64)) == per
    assert auto.pass_size(model, torch.zeros(320, 1, 64, 64)) == 107  # three even passes, not 128 + 128 + 64
    assert auto.pass_size(model, torch.zeros(80, 1, 224, 224)) == MIN_IMAGES_PER_PASS == 16  # 2^19 pixels: 10
    sized = Classifier(model.network, InputContract(("a", "b", "c"), input_size=224))  # resized inside: 224 counts
    assert auto.pass_size(sized, torch.zeros(80, 1, 64, 64)) == 16
    assert auto.pass_size(model, torch.zeros(40, 1, 512, 512)) == 16  # evenly would be 14: at least 16
    assert auto.pass_size(model, torch.zeros(12, 1, 512, 512)) == 12
    assert GradientExecution(images_per_pass=0).pass_size(model, torch.zeros(80, 1, 224, 224)) == 80
    assert GradientExecution(images_per_pass=3).pass_size(model, torch.zeros(8, 1, 8, 8)) == 3
    with pytest.raises(ValueError, match="images_per_pass"):
        GradientExecution(images_per_pass=-1)


def test_a_model_that_draws_randomness_runs_in_one_pass() -> None:
    model = bn_cnn()
    randomised = DefendedClassifier("tvm", model)
    assert draws_randomness(randomised) and not draws_randomness(model)
    assert not draws_randomness(DefendedClassifier("jpeg", model))
    forced = GradientExecution(images_per_pass=1)
    assert forced.pass_size(randomised, torch.zeros(8, 1, 8, 8)) == 8 and forced.pass_size(model, torch.zeros(8, 1, 8, 8)) == 1


def test_the_execution_is_not_an_attack_setting() -> None:
    attack = with_execution(SIA(), PLAIN)
    assert attack.execution == PLAIN and SIA().execution == GradientExecution()
    assert "execution" not in attack.describe() and "_execution" not in attack.describe()
