"""What the one loader refuses, before any image is read, in one line naming the file: a model
file loaded without its intensity convention (only a medrobust checkpoint records it), an input
size of 0, a negative one or one past the readers' pixel limit, a damaged checkpoint (a broken or
oversized safetensors header, a model.json declaring an impossible input); and a TorchScript model
whose output does not fit the classes is told so, not "failed on a blank image"."""

from __future__ import annotations

import json
import shutil
import struct
import warnings

import pytest
import torch
from torch import nn

from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.classifier import InputContract
from medrobust.models.loading import load_classifier
from medrobust.models.zoo import build_classifier
from medrobust.specs.contract_names import INTENSITY_NAMES

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:DeprecationWarning")

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


class GreyNet(nn.Module):
    """A one-channel network with ``outputs`` logits."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def _torchscript(tmp_path, outputs: int = 3):
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(GreyNet(outputs).eval()), str(path))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(build_classifier("small-cnn", CLASSES, 32).eval(), tmp_path_factory.mktemp("ckpt") / "ckpt")


def test_a_model_file_without_its_intensity_is_refused_with_the_choices(tmp_path):
    path = _torchscript(tmp_path)
    with pytest.raises(ValueError) as info:
        load_classifier(path, classes=CLASSES)
    message = str(info.value)
    assert message.startswith(f"{path}: the file does not record how the model expects its input scaled, so give "
                              "the intensity convention its training used (--intensity, model.load.intensity, or "
                              "intensity= in Python) - unit: the pixels in [0, 1] as stored")
    assert all(f"{name}: " in message for name in INTENSITY_NAMES) and "\n" not in message
    assert "(x - mean) / std with ImageNet's mean and std" in message and "[-1, 1] (2x - 1)" in message
    state_dict = tmp_path / "weights.pt"
    torch.save(build_classifier("small-cnn", CLASSES, 32).network.state_dict(), state_dict)
    with pytest.raises(ValueError, match=r"weights\.pt: the file does not record how the model expects its input"):
        load_classifier(state_dict, arch="small-cnn", classes=CLASSES)  # the zoo's default is no longer assumed
    assert load_classifier(path, classes=CLASSES, intensity="symmetric").contract.intensity.value == "symmetric"


def test_an_onnx_file_without_its_intensity_is_refused(tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(GreyNet(3).eval(), torch.zeros(1, 1, 16, 16), str(path), dynamo=False)
    with pytest.raises(ValueError, match=r"model\.onnx: the file does not record how the model expects its input"):
        load_classifier(path, classes=CLASSES)


def test_a_checkpoint_needs_no_intensity(checkpoint):
    assert load_classifier(checkpoint).contract.intensity.value == "unit"  # recorded in model.json


@pytest.mark.parametrize("size", [0, -3, 7072, (0, 5), (10_000, 5_001), 2.5])
def test_degenerate_input_sizes_are_refused_before_loading(tmp_path, size):
    path = _torchscript(tmp_path)
    with pytest.raises(ValueError) as info:
        load_classifier(path, classes=CLASSES, intensity="unit", input_size=size)
    shown = tuple(size) if isinstance(size, tuple) else size
    assert str(info.value) == (f"{path}: input size {shown} is not an image size: give the side in pixels the model "
                               "takes, a whole number from 1 to 7,071 (e.g. 224), or a height and width of at most "
                               "50,000,000 pixels in all")
    with pytest.raises(ValueError, match="is not an image size"):
        InputContract(tuple(CLASSES), input_size=size)  # the contract object itself refuses it


def test_the_largest_input_size_within_the_pixel_limit_is_accepted():
    assert InputContract(tuple(CLASSES), input_size=7071).input_size == (7071, 7071)
    assert InputContract(tuple(CLASSES), input_size=(1, 50_000_000)).input_size == (1, 50_000_000)


def test_torchscript_with_more_outputs_than_classes_says_so(tmp_path):
    path = _torchscript(tmp_path, outputs=7)  # a grey network: 3 channels fail, 1 runs with the wrong output
    with pytest.raises(ValueError) as info:
        load_classifier(path, classes=CLASSES, intensity="unit")
    assert str(info.value) == (f"{path}: a softmax model with 3 classes must return logits of shape (B, 3), got (1, 7); "
                               "check the output kind and the class names")


def _broken_copy(checkpoint, tmp_path, name):
    broken = tmp_path / name
    shutil.copytree(checkpoint, broken)
    return broken


def test_a_checkpoint_with_a_broken_or_oversized_safetensors_header_is_one_line(checkpoint, tmp_path):
    oversized = _broken_copy(checkpoint, tmp_path, "oversized")
    weights = oversized / "model.safetensors"
    weights.write_bytes(struct.pack("<Q", 10**12) + weights.read_bytes()[8:])
    with pytest.raises(ValueError) as info:
        load_classifier(oversized)
    assert str(info.value) == (f"{weights}: not a readable safetensors file (Error while deserializing header: header "
                               "too large); the checkpoint is damaged or truncated: copy it again, or re-save it with "
                               "medrobust")
    junk = _broken_copy(checkpoint, tmp_path, "junk")
    (junk / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"junk/model\.safetensors: not a readable safetensors file \(.*header too small"):
        load_classifier(junk)


@pytest.mark.parametrize(("change", "says"), [
    (lambda meta: meta["contract"].update(input_size=[100_000, 100_000]),
     "input size (100000, 100000) is not an image size"),
    (lambda meta: meta["contract"].update(input_size=[0, -5]), "input size (0, -5) is not an image size"),
    (lambda meta: meta.pop("contract"), "has no contract (classes, input size, intensity...)"),
    (lambda meta: meta.update(arch="no-such-net"), "unknown architecture 'no-such-net'"),
    (lambda meta: meta["contract"].update(intensity="hu"), "unknown intensity convention 'hu'"),
])
def test_a_checkpoint_whose_model_json_is_impossible_is_one_line(checkpoint, tmp_path, change, says):
    broken = _broken_copy(checkpoint, tmp_path, "broken")
    meta = json.loads((broken / "model.json").read_text())
    change(meta)
    (broken / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError) as info:
        load_classifier(broken)
    message = str(info.value)
    assert message.startswith(f"{broken / 'model.json'}: ") and says in message and "\n" not in message
    assert message.endswith("re-save the checkpoint with medrobust")


def test_weights_of_another_shape_are_one_line(checkpoint, tmp_path):
    other = save_checkpoint(build_classifier("small-cnn", ["a", "b"], 32).eval(), tmp_path / "other")
    mixed = _broken_copy(checkpoint, tmp_path, "mixed")
    shutil.copy(other / "model.safetensors", mixed / "model.safetensors")
    with pytest.raises(ValueError) as info:
        load_classifier(mixed)
    message = str(info.value)
    assert message.startswith(f"{mixed / 'model.safetensors'}: does not fit small-cnn") and "\n" not in message
    assert message.endswith("the weights and model.json come from different models")
