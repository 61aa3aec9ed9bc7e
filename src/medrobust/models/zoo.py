"""The built-in architectures, and :func:`build_classifier` to make a Classifier from one.

Two take volumes (B, C, D, H, W) (CT, MRI): ``densenet121-3d`` (MONAI's DenseNet121 with
``spatial_dims=3`` and the study's head) and ``small-cnn-3d`` (the small CNN in 3-D), one grey
channel in [0, 1] by default (or one channel per CT window, ``intensity=``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch.nn as nn

from medrobust.models.classifier import Classifier, InputContract
from medrobust.models.intensity import AnyIntensity, Intensity, network_channels_of, parse_intensity
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


@register("densenet121-3d", "DenseNet121 in 3-D (MONAI, spatial_dims=3) with the study's head, for volumes "
          "(B, C, D, H, W) of at least 32 voxels per side; no ImageNet weights", channels=1, intensity=Intensity.UNIT,
          spatial_dims=3)
def _densenet121_3d(num_outputs: int, in_channels: int) -> nn.Module:
    return StudyDenseNet121(num_outputs, in_channels, spatial_dims=3)


@register("small-cnn-3d", "the small CNN in 3-D (~290 k parameters), one grey channel, for volumes (B, C, D, H, W)",
          channels=1, intensity=Intensity.UNIT, spatial_dims=3)
def _small_cnn_3d(num_outputs: int, in_channels: int) -> nn.Module:
    return SmallCNN(num_outputs, in_channels, spatial_dims=3)


def num_outputs(output_kind: OutputKind, n_classes: int) -> int:
    return 1 if output_kind is OutputKind.BINARY else n_classes


def build_classifier(
    arch: str,
    classes: Sequence[str],
    input_size: int | tuple[int, int] | tuple[int, int, int] | None = None,
    output_kind: str | OutputKind = OutputKind.SOFTMAX,
    weights: str | Path | None = None,
    stored_channels: int = 1,
    download: bool = False,
    intensity: str | AnyIntensity | None = None,
) -> Classifier:
    """A fresh Classifier of a zoo architecture.

    The zoo (``list_models()``): ``densenet121``, the study's model — DenseNet121 (Huang, Liu,
    van der Maaten & Weinberger, "Densely Connected Convolutional Networks", CVPR 2017) with the
    study's head, global average pooling -> dense 256 ReLU (L2 1e-4) -> dropout 0.5 -> dense K;
    ``resnet18`` / ``resnet50`` (He, Zhang, Ren & Sun, CVPR 2016) and ``efficientnet-b0`` (Tan &
    Le, ICML 2019) from MONAI with a linear head, as transfer surrogates and targets; and
    ``small-cnn``, four conv-BN-ReLU-pool stages (~100 k parameters) on one grey channel, for
    tests and quick experiments. For volumes (B, C, D, H, W): ``densenet121-3d`` and
    ``small-cnn-3d``, the same networks with 3-D layers (MONAI's ``spatial_dims=3``). The network
    computes ``logits = head(features(prepare(x)))``
    with ``prepare`` the :class:`~medrobust.models.classifier.InputContract`'s mapping.

    The network's channels and intensity convention come from the architecture (3 channels and
    ImageNet statistics, except ``small-cnn``: 1 channel, [0, 1]).

    Args:
        arch: a zoo architecture (``list_models()``).
        classes: the class names in output order.
        input_size: the side or (H, W) images are resized to inside the model; for a 3-D
            architecture (D, H, W), or one side for a cube. Default None: the images' own size
            (the study used 224).
        output_kind: ``"softmax"`` (the default), ``"binary"`` (one logit for two classes) or
            ``"multilabel"`` (one per finding).
        weights: None or ``"none"`` (from scratch, the default), ``"imagenet"`` (the local torch
            hub cache; downloaded only with ``download``), or a path to a weights file in
            torchvision or MONAI layout.
        stored_channels: the channels of the images it is fed. Default 1 (radiographs).
        download: allow downloading ImageNet weights. Default False.
        intensity: the intensity convention instead of the architecture's (any form
            :func:`~medrobust.models.intensity.parse_intensity` reads); CT windows
            (``"hu_windows:40,80;80,200"``) also set the network's channels, one per window.
            Default None: the architecture's.

    Returns:
        The Classifier, in training mode as any new ``nn.Module``; call ``.eval()`` before
        predicting (attacks do it themselves).

    Shape:
        - Input: (B, stored_channels, H, W) float in [0, 1]; (B, stored_channels, D, H, W) for a
          3-D architecture.
        - Output: logits (B, K) ((B, 1) for binary).

    Raises:
        ValueError: an unknown architecture or output kind, or a size of the wrong rank.

    Example:

    >>> import torch
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32).eval()
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> model(x).shape, model.arch, model.classes
    (torch.Size([2, 3]), 'small-cnn', ['Normal', 'Pneumonia', 'Pneumothorax'])
    >>> binary = build_classifier("small-cnn", ["Normal", "Pneumothorax"], 32, output_kind="binary").eval()
    >>> binary(x).shape, binary.predict_proba(x).shape
    (torch.Size([2, 1]), torch.Size([2, 2]))
    >>> volumes = build_classifier("small-cnn-3d", ["normal", "haemorrhage"], (8, 32, 32),
    ...                            intensity="hu_windows:40,80;80,200").eval()
    >>> volumes(torch.rand(2, 1, 8, 32, 32)).shape, volumes.contract.network_channels, volumes.spatial_dims
    (torch.Size([2, 2]), 2, 3)
    """
    spec = get_spec(arch)
    kind = OutputKind.parse(output_kind)
    scale = spec.intensity if intensity is None else parse_intensity(intensity)
    channels = network_channels_of(scale) or spec.channels
    if isinstance(input_size, int):
        size: tuple[int, ...] | None = (input_size,) * spec.spatial_dims
    else:
        size = tuple(input_size) if input_size is not None else None
    if size is not None and len(size) != spec.spatial_dims:
        fix = "volumes: give input_size as (depth, height, width)" if spec.spatial_dims == 3 else \
            "images: give input_size as a side or (height, width)"
        raise ValueError(f"{arch} takes {fix}, got {size}")
    network = spec.builder(num_outputs(kind, len(classes)), channels)
    if weights not in (None, "none", ""):
        from medrobust.models.pretrained import load_backbone_weights

        load_backbone_weights(network, arch, weights, download=download)
    contract = InputContract(
        classes=tuple(classes),
        input_size=size,  # type: ignore[arg-type]
        stored_channels=stored_channels,
        network_channels=channels,
        intensity=scale,
        output_kind=kind,
        spatial_dims=spec.spatial_dims,
    )
    return Classifier(network, contract, arch=arch, metadata={"weights": str(weights or "none")})
