"""A shipped model loads on the worker from its bytes and leaves nothing behind: the temporary
folder it was written to is gone once it has loaded, and the loaded model still answers the same."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from medrobust.execution.model_shipping import ModelSource
from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.contract import ModelContract
from medrobust.models.zoo import build_classifier

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


def _leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("medrobust-shipped*")}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_classifier("small-cnn", CLASSES, input_size=32).eval()


def _onnx(model, folder: Path) -> Path:
    path = folder / "exported.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(model.network, torch.zeros(1, 1, 32, 32), str(path), dynamo=False, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return path


@pytest.mark.parametrize("kind", ["checkpoint", "onnx"])
def test_a_shipped_model_loads_and_leaves_no_files(model, tmp_path, kind) -> None:
    if kind == "checkpoint":
        source = ModelSource.from_path("shipped", save_checkpoint(model, tmp_path / "ckpt"))
    else:
        pytest.importorskip("onnxruntime", reason="ONNX models need the onnx extra")
        source = ModelSource.from_path("shipped", _onnx(model, tmp_path), ModelContract(classes=CLASSES, intensity="unit"))
    before = _leftovers()
    loaded = source.materialise(torch.device("cpu"))
    assert _leftovers() == before
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-4)
