"""Transfer attacks: the logit ensemble, the success rule per output kind, and the surrogate x
target matrix (crafted once per surrogate; white-box on the diagonal; transfer between two
independently trained CNNs beats the target's clean error rate)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from medrobust.attacks.registry import build_attack
from medrobust.attacks.transfer import (
    EnsembleClassifier,
    TransferMatrix,
    TransferResult,
    attack_success,
    transfer_attack,
    transfer_matrix,
)
from medrobust.models.classifier import Classifier, InputContract, NotDifferentiableError

CLASSES = ("Normal", "Pneumonia", "Pneumothorax")


def linear_classifier(seed: int, classes=CLASSES, kind: str = "softmax", size: int = 8) -> Classifier:
    torch.manual_seed(seed)
    n_out = 1 if kind == "binary" else len(classes)
    net = nn.Sequential(nn.Flatten(), nn.Linear(size * size, n_out))
    contract = InputContract(classes=tuple(classes), network_channels=1, intensity="unit", output_kind=kind)
    return Classifier(net, contract).eval()


class CountingAttack:
    """Wraps an attack and counts how often it crafts."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0
        self.name, self.targeted, self.findings = inner.name, inner.targeted, inner.findings

    def __call__(self, model, x, y):
        self.calls += 1
        return self.inner(model, x, y)

    def describe(self):
        return self.inner.describe()


def test_ensemble_averages_logits_with_weights() -> None:
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


def test_ensemble_refuses_mismatched_members() -> None:
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


def test_ensemble_with_a_black_box_member_is_not_differentiable() -> None:
    a, b = linear_classifier(0), linear_classifier(1)
    b.differentiable = False
    ens = EnsembleClassifier([a, b])
    assert not ens.differentiable
    with pytest.raises(NotDifferentiableError):
        build_attack("pgd")(ens, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))


def test_success_rule_per_output_kind() -> None:
    assert attack_success("softmax", torch.tensor([0, 1, 2]), torch.tensor([0, 2, 2])).tolist() == [False, True, False]
    assert attack_success("softmax", torch.tensor([0, 1]), torch.tensor([0, 2]), targeted=True).tolist() == [True, False]
    assert attack_success("binary", torch.tensor([1, 0]), torch.tensor([1, 1])).tolist() == [False, True]
    pred = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 0, 1]])
    y = torch.tensor([[1, 0, 1], [1, 0, 1], [0, 1, 1]])
    assert attack_success("multilabel", pred, y).tolist() == [False, True, True]  # any finding flipped
    assert attack_success("multilabel", pred, y, finding_index=[0, 2]).tolist() == [False, True, False]
    assert attack_success("multilabel", pred, y, targeted=True).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="shape"):
        attack_success("softmax", torch.tensor([0, 1]), torch.tensor([0]))


def test_transfer_attack_reports_clean_and_adversarial_predictions() -> None:
    surrogate, target = linear_classifier(0), linear_classifier(1)
    x = torch.round(torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255) / 255
    y = target.predict(x)
    y[:3] = (y[:3] + 1) % 3  # the target gets three wrong
    result = transfer_attack("fgsm:eps=16/255", surrogate, target, x, y)
    assert isinstance(result, TransferResult)
    assert result.x_adv.shape == x.shape and (result.x_adv - x).abs().max() <= 16 / 255 + 1e-6
    assert torch.equal(result.clean_pred, target.predict(x))
    assert torch.equal(result.adv_pred, target.predict(result.x_adv))
    assert torch.equal(result.success, result.adv_pred != y)
    assert result.n_images == 16 and result.n_correct == 13
    assert result.clean_error_rate == pytest.approx(3 / 16)
    assert result.success_rate_on_correct == pytest.approx(result.success[3:].float().mean().item())
    data = json.loads(json.dumps(result.to_json()))
    assert data["attack"]["name"] == "fgsm" and data["n_correct"] == 13 and "x_adv" not in data


def test_matrix_shape_keys_diagonal_and_one_crafting_per_surrogate() -> None:
    models = {"lin0": linear_classifier(0), "lin1": linear_classifier(1), "lin2": linear_classifier(2)}
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = models["lin0"].predict(x)
    attack = CountingAttack(build_attack("pgd", eps=8 / 255, steps=5))
    surrogates = {k: models[k] for k in ("lin0", "lin1")}
    matrix = transfer_matrix(attack, surrogates, models, x, y)
    assert isinstance(matrix, TransferMatrix) and attack.calls == 2
    assert matrix.surrogates == ["lin0", "lin1"] and matrix.targets == ["lin0", "lin1", "lin2"]
    assert set(matrix.success) == {"lin0", "lin1"} and all(set(r) == set(models) for r in matrix.success.values())
    assert len(matrix.rates()) == 2 and all(len(r) == 3 for r in matrix.rates(on_correct=True))
    assert set(matrix.adversarial) == {"lin0", "lin1"}
    for name in surrogates:  # the diagonal is the white-box success
        white = build_attack("pgd", eps=8 / 255, steps=5)(models[name], x, y)
        assert matrix.success[name][name] == pytest.approx((models[name].predict(white) != y).float().mean().item())
        assert torch.equal(matrix.adversarial[name], white)
    assert matrix.clean_error["lin0"] == 0.0 and matrix.n_correct["lin0"] == 20
    data = json.loads(json.dumps(matrix.to_json()))
    assert data["success"]["lin1"]["lin2"] == matrix.success["lin1"]["lin2"]
    with pytest.raises(ValueError, match="at least one"):
        transfer_matrix(attack, {}, models, x, y)


def test_multilabel_transfer_counts_any_named_finding() -> None:
    findings = ("Effusion", "Nodule", "Mass")
    surrogate = linear_classifier(3, classes=findings, kind="multilabel")
    target = linear_classifier(4, classes=findings, kind="multilabel")
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = target.predict(x)
    result = transfer_attack(build_attack("pgd", eps=32 / 255, findings=["Nodule"]), surrogate, target, x, y)
    assert torch.equal(result.success, result.adv_pred[:, 1] != y[:, 1])


def test_transfer_between_independently_trained_cnns_beats_clean_error(trained_small_cnn, second_small_cnn,
                                                                       phantom32) -> None:
    splits, _ = phantom32
    x, y = splits["test"]
    x, y = x[:60], y[:60]
    attack = build_attack("mifgsm", eps=8 / 255, steps=5)
    models = {"cnn0": trained_small_cnn, "cnn1": second_small_cnn}
    matrix = transfer_matrix(attack, {"cnn0": trained_small_cnn,
                                      "ensemble": EnsembleClassifier([trained_small_cnn, second_small_cnn])},
                             models, x, y)
    assert matrix.success["cnn0"]["cnn0"] > 0.9  # white-box
    transfer = matrix.success["cnn0"]["cnn1"]
    assert transfer > matrix.clean_error["cnn1"] + 0.3  # about 0.9 against a clean error of about 0.15
    assert matrix.success_on_correct["cnn0"]["cnn1"] > 0.3
    # an ensemble of both is a surrogate at least as strong against each member as a single CNN
    assert matrix.success["ensemble"]["cnn1"] >= transfer - 0.05
    assert matrix.success["ensemble"]["cnn0"] > 0.9
