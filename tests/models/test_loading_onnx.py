"""ONNX models through load_classifier: same answers as torch, and a black box that white-box
attacks refuse with a message pointing at transfer and query attacks."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from medrobust.models.classifier import NotDifferentiableError, require_gradients
from medrobust.models.loading import load_classifier
from medrobust.models.onnx_model import OnnxClassifier
from medrobust.models.zoo import build_classifier

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


def _export(network: nn.Module, path, size: int = 32) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(network.eval(), torch.zeros(1, 1, size, size), str(path), dynamo=False,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_classifier("small-cnn", CLASSES, input_size=32).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    _export(model.network, path)
    return model, path


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(1))


def test_predictions_match_torch(exported, images):
    model, path = exported
    loaded = load_classifier(path, classes=CLASSES, input_size=32, network_channels=1, intensity="unit")

    assert isinstance(loaded, OnnxClassifier) and loaded.metadata["format"] == "onnx"
    assert loaded.metadata["logits"] == "exact"
    assert loaded.device == torch.device("cpu") and list(loaded.parameters()) == []
    torch.testing.assert_close(loaded.logits(images), model.logits(images), rtol=0, atol=1e-4)
    torch.testing.assert_close(loaded.predict_proba(images), model.predict_proba(images), rtol=0, atol=1e-5)
    assert torch.equal(loaded.predict(images), model.predict(images))


def test_size_and_channels_come_from_the_graph(exported, images):
    model, path = exported
    loaded = load_classifier(path, classes=CLASSES, intensity="unit")
    assert loaded.input_size == (32, 32) and loaded.contract.network_channels == 1
    # a larger stored image is resized by the contract, as for the torch model
    big = torch.rand(2, 1, 48, 48)
    torch.testing.assert_close(loaded.logits(big), model.logits(big), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match=r"model\.onnx: 3 network channels were given but the ONNX model takes 1"):
        load_classifier(path, classes=CLASSES, intensity="unit", network_channels=3)


def test_onnx_is_a_black_box(exported, images):
    _, path = exported
    loaded = load_classifier(path, classes=CLASSES, input_size=32, network_channels=1, intensity="unit")
    assert loaded.differentiable is False

    with pytest.raises(NotDifferentiableError, match=r"PGD.*transfer attack.*query attack.*'square'"):
        require_gradients(loaded, "PGD")
    with pytest.raises(NotDifferentiableError, match="gradient through this ONNX model.*transfer.*square"):
        loaded(images.clone().requires_grad_(True))
    # without a gradient request it answers (what a query attack does)
    with torch.no_grad():
        assert loaded(images).shape == (5, 3)
    assert loaded(images).requires_grad is False


class _SoftmaxNet(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x).softmax(dim=1)


def test_probability_output_is_turned_back_into_logits(exported, images, tmp_path):
    model, _ = exported
    path = tmp_path / "softmax.onnx"
    _export(_SoftmaxNet(model.network), path)

    loaded = load_classifier(path, classes=CLASSES, intensity="unit")

    assert loaded.metadata["logits"] == "inverted softmax"
    torch.testing.assert_close(loaded.predict_proba(images), model.predict_proba(images), rtol=0, atol=1e-5)
    # log-probabilities differ from the logits by a per-row constant only
    diff = loaded.logits(images) - model.logits(images)
    torch.testing.assert_close(diff, diff[:, :1].expand_as(diff), rtol=0, atol=1e-4)
