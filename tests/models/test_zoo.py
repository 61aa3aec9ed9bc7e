"""The zoo: the study's DenseNet121 head, parameter counts, the other architectures, weights loading."""

from __future__ import annotations

import pytest
import torch

from medrobust.models.classifier import count_parameters
from medrobust.models.pretrained import WeightsError, imagenet_file, load_backbone_weights, remap_keys
from medrobust.models.registry import list_models
from medrobust.models.zoo import build_classifier

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


def test_zoo_lists_the_architectures() -> None:
    assert list_models() == ["densenet121", "densenet121-3d", "efficientnet-b0", "resnet18", "resnet50", "small-cnn",
                             "small-cnn-3d"]
    assert list_models("resnet*") == ["resnet18", "resnet50"]


def test_densenet121_has_the_study_head_and_parameter_count() -> None:
    model = build_classifier("densenet121", CLASSES, 64)
    head = model.network.head
    assert count_parameters(head.fc1) == 262_400  # Dense 256 on 1024 features
    assert count_parameters(head.fc2) == 771  # Dense 3
    assert head.dropout.p == 0.5
    total = count_parameters(model)
    bn_stats = sum(b.numel() for k, b in model.named_buffers() if k.endswith(("running_mean", "running_var")))
    assert total + bn_stats == 7_300_675  # the study's 7.30 M (Keras also counts BN statistics)
    # L2 1e-4 on the first head layer's kernel
    assert torch.isclose(model.network.regularization(), 1e-4 * head.fc1.weight.pow(2).sum())


@pytest.mark.parametrize("arch", ["densenet121", "resnet18", "efficientnet-b0", "small-cnn"])
def test_every_arch_takes_one_grey_channel_and_returns_logits(arch: str) -> None:
    model = build_classifier(arch, CLASSES, 32).eval()
    x = torch.rand(2, 1, 32, 32)
    assert model(x).shape == (2, 3)
    assert model.predict_proba(x).sum(1).allclose(torch.ones(2))


def test_local_weights_in_torchvision_layout_are_remapped(tmp_path) -> None:
    source = build_classifier("densenet121", CLASSES).network
    state = {}
    for key, value in source.features.state_dict().items():
        # torchvision's (old) layout: features.denseblock1.denselayer1.norm.1.weight, classifier.*
        key = key.replace(".layers.", ".").replace("norm1", "norm.1").replace("conv1", "conv.1")
        key = key.replace("norm2", "norm.2").replace("conv2", "conv.2")
        state["features." + key] = value.clone()
    state["classifier.weight"] = torch.zeros(1000, 1024)
    path = tmp_path / "densenet121-tv.pth"
    torch.save(state, path)
    target = build_classifier("densenet121", CLASSES).network
    report = load_backbone_weights(target, "densenet121", path)
    assert report.loaded == len([k for k in source.features.state_dict()])
    for key, value in source.features.state_dict().items():
        assert torch.equal(target.features.state_dict()[key], value)


def test_a_load_that_would_leave_layers_random_is_refused(tmp_path) -> None:
    source = build_classifier("densenet121", CLASSES).network.features.state_dict()
    partial = {"features." + k: v for k, v in list(source.items())[:10]}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.raises(WeightsError, match="refusing a load that would leave layers random"):
        load_backbone_weights(build_classifier("densenet121", CLASSES).network, "densenet121", path)


def test_remap_keys_handles_monai_and_resnet_layouts() -> None:
    t = torch.zeros(1)
    assert remap_keys({"features.denseblock1.denselayer1.layers.norm1.weight": t}, "densenet121") == {
        "features.denseblock1.denselayer1.layers.norm1.weight": t
    }
    assert list(remap_keys({"conv1.weight": t, "fc.weight": t}, "resnet18")) == ["body.conv1.weight"]


def test_missing_imagenet_weights_name_the_cache_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsError) as err:
        imagenet_file("densenet121")
    assert str(tmp_path / "checkpoints" / "densenet121-a639ec97.pth") in str(err.value)
    assert "--download" in str(err.value)
