"""Attack success and the transfer matrix: the success rule per output kind (untargeted,
targeted, multi-label findings), rates over all images and over the correctly classified ones,
and the surrogate x target matrix from stored adversarial images (white-box on the diagonal;
transfer between two independently trained CNNs beats the target's clean error rate)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medrobust.attacks.registry import build_attack
from medrobust.evaluation.attack_success import attack_succeeded, attack_success
from medrobust.evaluation.stages.transfer import transfer_matrix
from medrobust.models.ensemble import EnsembleClassifier

CLASSES = ("Normal", "Pneumonia", "Pneumothorax")


def test_success_rule_per_output_kind() -> None:
    assert attack_succeeded(np.array([0, 2, 2]), np.array([0, 1, 2])).tolist() == [False, True, False]
    assert attack_succeeded(np.array([0, 2]), np.array([0, 1]), targeted=True).tolist() == [True, False]
    assert attack_succeeded(np.array([1, 1]), np.array([1, 0])).tolist() == [False, True]  # binary labels
    pred = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1]])
    y = np.array([[1, 0, 1], [1, 0, 1], [0, 1, 1]])
    assert attack_succeeded(y, pred).tolist() == [False, True, True]  # any finding flipped
    assert attack_succeeded(y, pred, findings=[0, 2]).tolist() == [False, True, False]
    assert attack_succeeded(y, pred, targeted=True).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="shape"):
        attack_succeeded(np.array([0]), np.array([0, 1]))


def test_targeted_rates_count_images_not_already_at_the_target() -> None:
    target = np.array([2, 2, 2, 2])
    before = np.array([2, 0, 1, 0])  # image 0 is already at the target
    after = np.array([2, 2, 1, 2])
    s = attack_success(target, before, after, targeted=True)
    assert s.n_correct_before == 3 and s.success_rate_all == 0.75 and s.success_rate_correct == pytest.approx(2 / 3)
    untargeted = attack_success(np.array([0, 1]), np.array([0, 1]), np.array([1, 1]))
    assert untargeted.success_rate_all == 0.5 and untargeted.success_rate_correct == 0.5
    empty = attack_success(np.array([], dtype=int), np.array([], dtype=int), np.array([], dtype=int))
    assert empty.n_images == 0 and empty.success_rate_all is None and empty.success_rate_correct is None


def test_transfer_rates_over_all_images_and_over_the_correct_ones(linear_classifier) -> None:
    surrogate, target = linear_classifier(0), linear_classifier(1)
    x = torch.round(torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255) / 255
    y = target.predict(x)
    y[:3] = (y[:3] + 1) % 3  # the target gets three wrong
    x_adv = build_attack("fgsm:eps=16/255")(surrogate, x, y)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 16 / 255 + 1e-6
    clean_pred, adv_pred = target.predict(x).numpy(), target.predict(x_adv).numpy()
    success = attack_succeeded(y.numpy(), adv_pred)
    assert np.array_equal(success, adv_pred != y.numpy())
    result = attack_success(y.numpy(), clean_pred, adv_pred)
    assert result.n_images == 16 and result.n_correct_before == 13
    assert result.clean_accuracy == pytest.approx(13 / 16)  # a clean error rate of 3/16
    assert result.success_rate_correct == pytest.approx(success[3:].mean())
    data = json.loads(json.dumps(result.to_json()))
    assert data["n_correct_before"] == 13


def transfer_matrix_from_images(key, adversarial, models, x, y):
    """The runner's inputs to :func:`transfer_matrix`: each model's decisions on clean and crafted images."""
    clean = {t: m.predict(x).numpy() for t, m in models.items()}
    adv = {(s, t): m.predict(images).numpy() for s, images in adversarial.items() for t, m in models.items()}
    return transfer_matrix(key, list(adversarial), list(models), clean, adv, y)


def test_matrix_shape_keys_and_white_box_diagonal(linear_classifier) -> None:
    models = {"lin0": linear_classifier(0), "lin1": linear_classifier(1), "lin2": linear_classifier(2)}
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = models["lin0"].predict(x)
    attack = build_attack("pgd", eps=8 / 255, steps=5)
    adversarial = {name: attack(models[name], x, y) for name in ("lin0", "lin1")}
    matrix = transfer_matrix_from_images("pgd@8/255", adversarial, models, x, y.numpy())
    assert matrix.sources == ["lin0", "lin1"] and matrix.targets == ["lin0", "lin1", "lin2"]
    assert len(matrix.success_rate) == 2 and all(len(r) == 3 for r in matrix.success_rate_correct)
    for i, name in enumerate(("lin0", "lin1")):  # the diagonal is the white-box success
        white = (models[name].predict(adversarial[name]) != y).float().mean().item()
        assert matrix.success_rate[i][i] == pytest.approx(white)
    assert matrix.success_rate_correct[0][0] == matrix.success_rate[0][0]  # lin0 got every image right
    data = json.loads(json.dumps(matrix.model_dump()))
    assert data["success_rate"][1][2] == matrix.success_rate[1][2]


def test_multilabel_success_counts_the_named_finding(linear_classifier) -> None:
    findings = ("Effusion", "Nodule", "Mass")
    surrogate = linear_classifier(3, classes=findings, kind="multilabel")
    target = linear_classifier(4, classes=findings, kind="multilabel")
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = target.predict(x)
    x_adv = build_attack("pgd", eps=32 / 255, findings=["Nodule"])(surrogate, x, y)
    adv_pred = target.predict(x_adv).numpy()
    success = attack_succeeded(y.numpy(), adv_pred, findings=[1])
    assert np.array_equal(success, adv_pred[:, 1] != y.numpy()[:, 1])


def test_transfer_between_independently_trained_cnns_beats_clean_error(trained_small_cnn, second_small_cnn,
                                                                       phantom32) -> None:
    splits, _ = phantom32
    x, y = splits["test"]
    x, y = x[:60], y[:60]
    attack = build_attack("mifgsm", eps=8 / 255, steps=5)
    adversarial = {"cnn0": attack(trained_small_cnn, x, y),
                   "ensemble": attack(EnsembleClassifier([trained_small_cnn, second_small_cnn]), x, y)}
    matrix = transfer_matrix_from_images("mifgsm@8/255", adversarial, {"cnn0": trained_small_cnn, "cnn1": second_small_cnn},
                                         x, y.numpy())
    (cnn0_cnn0, cnn0_cnn1), (ens_cnn0, ens_cnn1) = matrix.success_rate
    assert cnn0_cnn0 > 0.9  # white-box
    clean_error = float((second_small_cnn.predict(x) != y).float().mean())
    assert cnn0_cnn1 > clean_error + 0.3  # about 0.9 against a clean error of about 0.15
    assert matrix.success_rate_correct[0][1] > 0.3
    # an ensemble of both is a surrogate at least as strong against each member as a single CNN
    assert ens_cnn1 >= cnn0_cnn1 - 0.05
    assert ens_cnn0 > 0.9
