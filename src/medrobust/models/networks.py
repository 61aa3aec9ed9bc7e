"""The networks of the zoo, built from MONAI's building blocks (torchvision does not import
on our machines). The study's DenseNet121 and the small CNN also come with ``spatial_dims=3``,
for volumes (B, C, D, H, W): the same layers with 3-D convolutions, norms and pools. Each network
exposes ``head`` (the layers that map pooled features to
logits) and ``stages()`` (its top-level blocks in order), which the trainable policies use.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class StudyHead(nn.Module):
    """The study's classification head: Dense 256 ReLU (L2 1e-4) -> Dropout 0.5 -> Dense K.

    With 1024 input features and K = 3 its two layers hold 262,400 and 771 parameters, as
    in the study's model summary. ``l2`` is the Keras-style kernel regulariser of the first
    layer: ``l2 * sum(W**2)`` added to the training loss (see :meth:`regularization`).
    """

    def __init__(self, in_features: int, num_outputs: int, hidden: int = 256, dropout: float = 0.5,
                 l2: float = 1e-4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_outputs)
        self.l2 = l2

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.relu(self.fc1(features))))

    def regularization(self) -> torch.Tensor:
        return self.l2 * self.fc1.weight.pow(2).sum()


class StudyDenseNet121(nn.Module):
    """DenseNet121 features -> ReLU -> global average pooling -> :class:`StudyHead`.

    The feature extractor is MONAI's DenseNet121 ``features`` (the torchvision/Keras layout:
    conv0, four dense blocks of 6/12/24/16 layers with growth 32, transitions, norm5), so
    ImageNet weights in torchvision layout load into it after a key remap. With
    ``spatial_dims=3`` (MONAI's 3-D DenseNet121, no ImageNet weights) it takes volumes; its five
    halvings need at least 32 voxels along each axis.
    """

    def __init__(self, num_outputs: int, in_channels: int = 3, spatial_dims: int = 2) -> None:
        super().__init__()
        from monai.networks.nets import DenseNet121

        self.features = DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1).features
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool3d(1) if spatial_dims == 3 else nn.AdaptiveAvgPool2d(1)
        self.head = StudyHead(1024, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.relu(self.features(x))).flatten(1))

    def stages(self) -> list[nn.Module]:
        return [*self.features.children(), self.head]

    def last_block(self) -> list[nn.Module]:
        return [self.features.denseblock4, self.features.norm5, self.head]

    def regularization(self) -> torch.Tensor:
        return self.head.regularization()


class MonaiBackbone(nn.Module):
    """A MONAI ResNet or EfficientNet whose own classifier is replaced by a linear head.

    The MONAI network sits in ``body`` with its final layer set to the identity, so it returns
    pooled features; ``head`` maps them to logits.
    """

    def __init__(self, arch: str, num_outputs: int, in_channels: int = 3) -> None:
        super().__init__()
        if arch in ("resnet18", "resnet50"):
            from monai.networks.nets import resnet18, resnet50

            factory = {"resnet18": resnet18, "resnet50": resnet50}[arch]
            self.body = factory(spatial_dims=2, n_input_channels=in_channels, num_classes=1000)
            features = self.body.fc.in_features
            self.body.fc = nn.Identity()
            self._last = [self.body.layer4]
        elif arch.startswith("efficientnet-"):
            from monai.networks.nets import EfficientNetBN

            self.body = EfficientNetBN(arch, pretrained=False, spatial_dims=2, in_channels=in_channels, num_classes=1000)
            features = self.body._fc.in_features
            self.body._fc = nn.Identity()
            self._last = [self.body._blocks[-1], self.body._conv_head, self.body._bn1]
        else:
            raise ValueError(f"MonaiBackbone does not know {arch!r}")
        self.head = nn.Linear(features, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def stages(self) -> list[nn.Module]:
        return [*self.body.children(), self.head]

    def last_block(self) -> list[nn.Module]:
        return [*self._last, self.head]


class SmallCNN(nn.Module):
    """A small, fast CNN (about 100 k parameters) for tests and quick experiments:
    four conv-BN-ReLU-maxpool stages (16, 32, 64, 128 channels), global average pooling, linear.

    ``spatial_dims=3``: the same stages in 3-D (3 x 3 x 3 convolutions, about 290 k parameters)
    for volumes; its pools round up (``ceil_mode``), so a volume of few slices (a CT of 8) still
    passes all four."""

    def __init__(self, num_outputs: int, in_channels: int = 1, width: int = 16, spatial_dims: int = 2) -> None:
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            if spatial_dims == 3:
                layers.append(nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout),
                                            nn.ReLU(), nn.MaxPool3d(2, ceil_mode=True)))
            else:
                layers.append(nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                            nn.ReLU(), nn.MaxPool2d(2)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1) if spatial_dims == 3 else nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(chans[-1], num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))

    def stages(self) -> list[nn.Module]:
        return [*self.features.children(), self.head]

    def last_block(self) -> list[nn.Module]:
        return [self.features[-1], self.head]
