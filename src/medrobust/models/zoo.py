"""The built-in architectures, and :func:`build_classifier` to make a Classifier from one."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch.nn as nn

from medrobust.models.classifier import Classifier, InputContract
from medrobust.models.intensity import Intensity
from medrobust.models.networks import MonaiBackbone, SmallCNN, StudyDenseNet121
from medrobust.models.output_kind import OutputKind
from medrobust.models.registry import get_spec, register

log = logging.getLogger(__name__)


@register("densenet121", "DenseNet121 with the study's head (GAP -> 256 ReLU, L2 1e-4 -> dropout 0.5 -> K)",
          imagenet=True)
def _densenet121(num_outputs: int, in_channels: int) -> nn.Module:
    return StudyDenseNet121(num_outputs, in_channels)


@register("resnet18", "ResNet-18 (MONAI) with a linear head; a transfer surrogate/target", imagenet=True)
def _resnet18(num_outputs: int, in_channels: int) -> nn.Module:
    return MonaiBackbone("resnet18", num_outputs, in_channels)


@register("resnet50", "ResNet-50 (MONAI) with a linear head; a transfer surrogate/target", imagenet=True)
def _resnet50(num_outputs: int, in_channels: int) -> nn.Module:
    return MonaiBackbone("resnet50", num_outputs, in_channels)


@register("efficientnet-b0", "EfficientNet-B0 (MONAI) with a linear head; a transfer surrogate/target",
          imagenet=True)
def _efficientnet_b0(num_outputs: int, in_channels: int) -> nn.Module:
    return MonaiBackbone("efficientnet-b0", num_outputs, in_channels)


@register("small-cnn", "a small 4-stage CNN (~100 k parameters), one grey channel; fast enough for tests",
          channels=1, intensity=Intensity.UNIT)
def _small_cnn(num_outputs: int, in_channels: int) -> nn.Module:
    return SmallCNN(num_outputs, in_channels)


def num_outputs(output_kind: OutputKind, n_classes: int) -> int:
    return 1 if output_kind is OutputKind.BINARY else n_classes


def build_classifier(
    arch: str,
    classes: Sequence[str],
    input_size: int | tuple[int, int] | None = None,
    output_kind: str | OutputKind = OutputKind.SOFTMAX,
    weights: str | Path | None = None,
    stored_channels: int = 1,
    download: bool = False,
) -> Classifier:
    """A fresh Classifier of a zoo architecture.

    ``weights``: None or "none" (from scratch), "imagenet" (local torch hub cache; downloaded
    only with ``download=True``), or a path to a weights file in torchvision or MONAI layout.
    """
    spec = get_spec(arch)
    kind = OutputKind.parse(output_kind)
    network = spec.builder(num_outputs(kind, len(classes)), spec.channels)
    if weights not in (None, "none", ""):
        from medrobust.models.pretrained import load_backbone_weights

        load_backbone_weights(network, arch, weights, download=download)
    contract = InputContract(
        classes=tuple(classes),
        input_size=(input_size, input_size) if isinstance(input_size, int) else input_size,
        stored_channels=stored_channels,
        network_channels=spec.channels,
        intensity=spec.intensity,
        output_kind=kind,
    )
    return Classifier(network, contract, arch=arch, metadata={"weights": str(weights or "none")})
