"""The three output kinds on linear models, where the input gradient of the loss is known:

* binary, z = w.x + b:        d BCE / dx = (sigmoid(z) - y) w
* multilabel, z = W x + b:    d sum_k BCE_k / dx = (sigmoid(z) - y) @ W
* softmax, z = W x + b:       d CE / dx = (softmax(z) - onehot(y)) @ W

An attack ascends this gradient, so its sign decides which way every pixel moves.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.models.classifier import Classifier, InputContract
from medrobust.models.output_kind import OutputKind

SIDE = 4
D = SIDE * SIDE


def _linear_classifier(weight: torch.Tensor, bias: torch.Tensor, classes: list[str], kind: str) -> Classifier:
    linear = nn.Linear(D, weight.shape[0]).double()
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    contract = InputContract(classes=tuple(classes), stored_channels=1, network_channels=1, intensity="unit",
                             output_kind=kind)
    return Classifier(nn.Sequential(nn.Flatten(), linear), contract).eval()


def _input_gradient(model: Classifier, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(model.loss(logits, target, reduction="sum"), x)
    return logits.detach(), grad.flatten(1)


@pytest.fixture()
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_binary_single_logit(gen):
    w = torch.randn(1, D, generator=gen, dtype=torch.float64)
    b = torch.tensor([0.1], dtype=torch.float64)
    model = _linear_classifier(w, b, ["Normal", "Pneumonia"], "binary")
    x = torch.rand(6, 1, SIDE, SIDE, generator=gen, dtype=torch.float64)
    z = x.flatten(1) @ w.T + b  # (6, 1)

    proba = model.predict_proba(x)
    assert proba.shape == (6, 2)
    torch.testing.assert_close(proba[:, 1].double(), torch.sigmoid(z[:, 0]), rtol=0, atol=1e-6)
    assert torch.equal(model.predict(x), (z[:, 0] > 0).long())

    target = torch.ones(6)
    logits, grad = _input_gradient(model, x, target)
    assert logits.shape == (6, 1)
    expected = (torch.sigmoid(z) - 1.0) * w  # (6, D)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-6)
    # raising the positive logit lowers the loss: the gradient is negative where w > 0
    assert (grad[:, w[0] > 0] < 0).all() and (grad[:, w[0] < 0] > 0).all()


def test_multilabel_per_finding(gen):
    k = 4
    weight = torch.randn(k, D, generator=gen, dtype=torch.float64)
    bias = torch.randn(k, generator=gen, dtype=torch.float64)
    model = _linear_classifier(weight, bias, ["Atelectasis", "Effusion", "Nodule", "Pneumothorax"], "multilabel")
    x = torch.rand(5, 1, SIDE, SIDE, generator=gen, dtype=torch.float64)
    z = x.flatten(1) @ weight.T + bias

    assert model.predict_proba(x).shape == (5, k)
    assert torch.equal(model.predict(x), (z > 0).long())

    target = (torch.rand(5, k, generator=gen) > 0.5).double()
    logits, grad = _input_gradient(model, x, target)
    assert logits.shape == (5, k)
    expected = (torch.sigmoid(z) - target) @ weight
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-6)


def test_softmax_cross_entropy(gen):
    k = 3
    weight = torch.randn(k, D, generator=gen, dtype=torch.float64)
    bias = torch.randn(k, generator=gen, dtype=torch.float64)
    model = _linear_classifier(weight, bias, ["Normal", "Pneumonia", "Pneumothorax"], "softmax")
    x = torch.rand(5, 1, SIDE, SIDE, generator=gen, dtype=torch.float64)
    z = x.flatten(1) @ weight.T + bias

    torch.testing.assert_close(model.predict_proba(x).double(), z.softmax(1), rtol=0, atol=1e-6)
    assert torch.equal(model.predict(x), z.argmax(1))

    target = torch.tensor([0, 1, 2, 1, 0])
    _, grad = _input_gradient(model, x, target)
    expected = (z.softmax(1) - nn.functional.one_hot(target, k).double()) @ weight
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-6)


def test_binary_confidence_is_the_probability_of_the_decided_label() -> None:
    logits = torch.tensor([[-0.4], [1.0]])  # p = 0.401, 0.731
    assert OutputKind.BINARY.decide(logits, 0.3).tolist() == [1, 1]
    torch.testing.assert_close(OutputKind.BINARY.confidence(logits, 0.3), torch.sigmoid(logits)[:, 0])
    torch.testing.assert_close(OutputKind.BINARY.confidence(logits), torch.tensor([1 - 0.401312, 0.731059]),
                               atol=1e-6, rtol=0)  # at the default threshold: the larger probability
