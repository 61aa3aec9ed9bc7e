"""load_classifier on torch files: TorchScript, state dicts (strict), and the pickle policy."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from medrobust.models.checkpoint import save_checkpoint
from medrobust.models.classifier import Classifier
from medrobust.models.loading import is_torchscript, load_classifier
from medrobust.models.pretrained import WeightsError
from medrobust.models.zoo import build_classifier

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:DeprecationWarning"),  # TorchScript is what users bring
    pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),  # the refused evil pickle
]


class TinyNet(nn.Module):
    """A whole-module pickle needs its class importable: defined at module level on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class Evil:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def small() -> Classifier:
    torch.manual_seed(0)
    model = build_classifier("small-cnn", CLASSES, input_size=32).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so a lost buffer would show
        for m in model.network.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("export", ["script", "trace"])
def test_torchscript_loads_and_predicts_identically(small, images, tmp_path, export):
    net = torch.jit.script(small.network) if export == "script" else torch.jit.trace(small.network, torch.zeros(1, 1, 32, 32))
    path = tmp_path / "model.pt"
    torch.jit.save(net, str(path))
    assert is_torchscript(path)

    loaded = load_classifier(path, classes=CLASSES, intensity="unit", input_size=32, network_channels=1)

    assert loaded.metadata["format"] == "torchscript" and loaded.metadata["source"] == str(path)
    assert loaded.classes == CLASSES and loaded.input_size == (32, 32) and loaded.arch is None
    torch.testing.assert_close(loaded.logits(images), small.logits(images), rtol=0, atol=1e-6)
    assert torch.equal(loaded.predict(images), small.predict(images))


def test_torchscript_of_a_grey_network_is_read_as_one_channel(small, images, tmp_path):
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(small.network), str(path))
    # The scripted small-cnn takes one channel: the default (3, an RGB export) fails, 1 works,
    # so the file needs no channel option (the CLI and the service have none).
    loaded = load_classifier(path, classes=CLASSES, intensity="unit", input_size=32)
    assert loaded.contract.network_channels == 1
    torch.testing.assert_close(loaded.logits(images), small.logits(images), rtol=0, atol=1e-6)


def test_torchscript_fitting_no_channel_count_fails_clearly(tmp_path):
    path = tmp_path / "model.pt"
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    torch.jit.save(torch.jit.script(net), str(path))
    with pytest.raises(ValueError, match=r"model\.pt: the model failed on a blank \(1, 1, 32, 32\) image .*network_channels"):
        load_classifier(path, classes=CLASSES, intensity="unit", input_size=32)


@pytest.mark.parametrize("layout", ["network", "classifier", "safetensors"])
def test_state_dict_with_arch_loads_identically(small, images, tmp_path, layout):
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in small.network.state_dict().items()}, str(path))
    else:
        path = tmp_path / "weights.pth"
        torch.save((small if layout == "classifier" else small.network).state_dict(), path)
    assert not is_torchscript(path)

    loaded = load_classifier(path, arch="small-cnn", classes=CLASSES, intensity="unit", input_size=32)

    assert loaded.metadata["format"] == "state_dict" and loaded.arch == "small-cnn"
    assert loaded.contract.network_channels == 1 and loaded.contract.intensity.value == "unit"  # the spec's
    torch.testing.assert_close(loaded.logits(images), small.logits(images), rtol=0, atol=0)
    # the head came from the file, not a fresh initialisation
    assert torch.equal(loaded.network.head.weight, small.network.head.weight)


def test_state_dict_in_monai_layout_keeps_its_trained_head(tmp_path):
    """A ResNet saved from MONAI's own class (no ``body.`` prefix, head named ``fc``) loads with its head."""
    torch.manual_seed(0)
    model = build_classifier("resnet18", ["Normal", "Pneumonia"], input_size=32).eval()
    state = {(("fc." + k[5:]) if k.startswith("head.") else k.removeprefix("body.")): v
             for k, v in model.network.state_dict().items()}
    assert "fc.weight" in state and not any(k.startswith("body.") for k in state)
    path = tmp_path / "resnet.pth"
    torch.save(state, path)

    loaded = load_classifier(path, arch="resnet18", classes=["Normal", "Pneumonia"], intensity="imagenet", input_size=32)

    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(loaded.logits(x), model.logits(x), rtol=0, atol=0)


def test_state_dict_for_wrong_arch_or_classes_is_a_clear_error(small, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(small.network.state_dict(), path)
    with pytest.raises(WeightsError, match=r"weights\.pth: does not fit resnet18 .*missing.*--arch"):
        load_classifier(path, arch="resnet18", classes=CLASSES, intensity="imagenet")
    with pytest.raises(WeightsError, match=r"does not fit small-cnn with 2 outputs.*head\.weight \(3, 128\) in the file"):
        load_classifier(path, arch="small-cnn", classes=["a", "b"], intensity="unit")


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_never_unpickled(tmp_path, writer):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(Evil(marker), evil)
    else:
        evil.write_bytes(pickle.dumps(Evil(marker)))
    assert not marker.exists()

    with pytest.raises(ValueError, match=r"evil\.pt: .*refusing to unpickle.*arbitrary code.*--arch.*--trust-pickle"):
        load_classifier(evil, classes=["a", "b"], intensity="unit")
    assert not marker.exists()

    # with an arch the file is read as a state dict with weights_only=True: refused as well
    with pytest.raises(WeightsError, match=r"evil\.pt: could not be read .*weights_only=True"):
        load_classifier(evil, arch="small-cnn", classes=["a", "b"], intensity="unit")
    assert not marker.exists()

    # control: the file really is armed — plain unpickling creates the marker
    handle = torch.load(evil, weights_only=False) if writer == "torch.save" else pickle.loads(evil.read_bytes())
    handle.close()
    assert marker.exists()


def test_trusted_whole_module_pickle_loads_and_predicts(tmp_path, caplog):
    torch.manual_seed(0)
    net = TinyNet().eval()
    path = tmp_path / "whole.pt"
    torch.save(net, path)
    x = torch.rand(4, 1, 16, 16)

    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_classifier(path, classes=["Normal", "Pneumonia"], intensity="unit", network_channels=1)
    with caplog.at_level(logging.WARNING, logger="medrobust.models.loading"):
        loaded = load_classifier(path, classes=["Normal", "Pneumonia"], intensity="unit", network_channels=1, trust_pickle=True)

    assert any("trust_pickle" in r.getMessage() for r in caplog.records)
    assert isinstance(loaded.network, TinyNet) and loaded.metadata["format"] == "pickle"
    with torch.no_grad():
        expected = net(x)
    torch.testing.assert_close(loaded.logits(x), expected, rtol=0, atol=1e-6)
    assert torch.equal(loaded.predict(x), expected.argmax(1))


def test_foreign_model_needs_class_names(small, tmp_path):
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(small.network), str(path))
    with pytest.raises(ValueError, match=r"model\.pt: is not a medrobust checkpoint.*--classes"):
        load_classifier(path)


def test_output_shape_must_match_classes(small, tmp_path):
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(small.network), str(path))
    with pytest.raises(ValueError, match=r"model\.pt: a softmax model with 2 classes must return logits of shape \(B, 2\)"):
        load_classifier(path, classes=["a", "b"], intensity="unit", network_channels=1)
    with pytest.raises(ValueError, match=r"model\.pt: a binary model .* \(B, 1\)"):
        load_classifier(path, classes=["a", "b"], intensity="unit", network_channels=1, output_kind="binary")


def test_checkpoint_directory_ignores_user_contract(small, images, tmp_path):
    directory = save_checkpoint(small, tmp_path / "ckpt")
    loaded = load_classifier(directory, classes=["ignored"])
    assert loaded.classes == CLASSES
    torch.testing.assert_close(loaded.logits(images), small.logits(images), rtol=0, atol=0)
    assert load_classifier(directory / "model.json").classes == CLASSES


def test_plain_directory_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not a medrobust checkpoint"):
        load_classifier(tmp_path, classes=["a"])
    with pytest.raises(FileNotFoundError, match=r"nope\.pt: model file not found"):
        load_classifier(tmp_path / "nope.pt", classes=["a"])
