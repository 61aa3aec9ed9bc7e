"""``mr.certify``: per-image certificates with the class names, certified accuracy, JSON-ready
dicts, the same certificates as the smoothed classifier's own (seeded by each image's position),
and clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import medrobust as mr
from medrobust.defenses.randomized_smoothing import SmoothedClassifier
from medrobust.models.classifier import Classifier, InputContract

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


def _model(kind: str = "softmax") -> Classifier:
    """A linear three-class model on 8 x 8 images deciding by the image's mean m: logits
    (-16 m + 4, 0, 16 m - 12), so class 0 near m = 0, 1 near 0.5 and 2 near 1, each 0.25 of mean
    (an L2 distance of 2) from a boundary."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[-16.0], [0.0], [16.0]]).expand(3, 64) / 64)
        net[1].bias.copy_(torch.tensor([4.0, 0.0, -12.0]))
    return Classifier(net, InputContract(tuple(CLASSES), network_channels=1, intensity="unit", output_kind=kind)).eval()


@pytest.fixture(scope="module")
def images():
    levels = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.5, 0.0])
    x = levels.view(-1, 1, 1, 1).expand(-1, 1, 8, 8).contiguous()
    y = torch.tensor([0, 0, 2, 2, 1, 2])  # the last image is labelled wrong on purpose
    return x, y


@pytest.fixture(scope="module")
def result(images):
    x, y = images
    return mr.certify(_model(), mr.open_images(x, labels=y, classes=CLASSES), sigma=0.25, n0=50, n=400, seed=3,
                      batch_size=128)


def test_each_image_gets_names_a_radius_or_an_abstention(result, images) -> None:
    assert len(result) == 6 and result.classes == CLASSES and result.labelled
    first = result.images[0]
    assert first.label == "Normal" and first.prediction == "Normal" and first.radius > 0.25
    assert first.base_prediction == "Normal" and first.smoothed_prediction == "Normal"
    assert sum(first.counts.values()) == 400 and set(first.counts) == set(CLASSES)
    assert [i.prediction for i in result.images] == ["Normal", "Normal", "Pneumothorax", "Pneumothorax", "Pneumonia",
                                                     "Normal"]
    # every draw right: p_A_lower = alpha^(1/n), below the exact radius 2
    assert first.radius == pytest.approx(0.25 * 2.1226, abs=2e-3) and first.p_a_lower == pytest.approx(0.001 ** (1 / 400))
    rows = result.to_dicts()
    assert json.loads(json.dumps(rows)) == rows  # JSON-ready: no NaN, no numpy types
    assert rows[0]["radius_grey_levels_per_pixel"] == pytest.approx(first.radius / 8 * 255, abs=1e-3)


def test_certified_accuracy_counts_right_answers_at_or_beyond_the_radius(result) -> None:
    radii = [i.radius if i.radius is not None else -1 for i in result.images]
    right = [i.prediction is not None and i.prediction == i.label for i in result.images]
    for r in (0.0, 0.1, 0.25, 0.5, 1.0):
        assert result.certified_accuracy(r) == pytest.approx(np.mean([ok and rad >= r for ok, rad in zip(right, radii)]))
    assert result.certified_accuracy(0.5) == pytest.approx(5 / 6)  # the wrongly labelled image never counts
    assert result.certified_accuracy(1.0) == 0.0 and result.abstention_rate == 0.0


def test_the_certificates_are_the_smoothed_classifiers_seeded_by_position(result, images) -> None:
    x, _ = images
    arrays = SmoothedClassifier(_model(), 0.25, batch=128).certify_batch(x, n0=50, n=400, alpha=0.001, seed=3)
    assert [i.radius if i.radius is not None else None for i in result.images] == [
        None if np.isnan(r) else pytest.approx(r) for r in arrays["radius"]]
    assert [list(i.counts.values()) for i in result.images] == arrays["counts"].tolist()


def test_unlabelled_images_have_no_certified_accuracy_and_refusals_are_clear(images) -> None:
    x, _ = images
    plain = mr.certify(_model(), x[:2], n0=10, n=50)
    assert plain.images[0].label is None and not plain.labelled
    with pytest.raises(ValueError, match="true class"):
        plain.certified_accuracy(0.1)
    with pytest.raises(ValueError, match=r"mr.certify: invalid settings: sigma"):
        mr.certify(_model(), x[:2], sigma=0)
    with pytest.raises(ValueError, match="multi-label"):
        mr.certify(_model("multilabel"), x[:2], n0=10, n=50)
