"""Intensity conventions: how a network expects its input scaled.

medrobust's currency is always [0, 1]; each :class:`~medrobust.models.classifier.Classifier`
maps it to its network's convention inside ``forward``, so an attack budget is always in
grey levels of the stored image.
"""

from __future__ import annotations

from enum import Enum

import torch

from medrobust.contract_names import intensity_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Intensity(str, Enum):
    UNIT = "unit"  # [0, 1] as stored (also accepted as "none")
    IMAGENET = "imagenet"  # (x - mean) / std with ImageNet statistics
    SYMMETRIC = "symmetric"  # [-1, 1]: 2x - 1 (also accepted as "[-1,1]")
    BYTE = "byte"  # [0, 255]: 255 x (also accepted as "[0,255]")

    @classmethod
    def parse(cls, value: "str | Intensity") -> "Intensity":
        if isinstance(value, cls):
            return value
        return cls(intensity_name(value))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] of shape (B, C, H, W) to this convention (differentiable).

        ImageNet statistics are per channel for 3 channels; a 1-channel network gets the
        mean of the three means and stds (0.449, 0.226).
        """
        if self is Intensity.UNIT:
            return x
        if self is Intensity.SYMMETRIC:
            return x * 2.0 - 1.0
        if self is Intensity.BYTE:
            return x * 255.0
        channels = x.shape[1]
        if channels == 3:
            mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        else:
            mean = torch.tensor(sum(IMAGENET_MEAN) / 3, dtype=x.dtype, device=x.device)
            std = torch.tensor(sum(IMAGENET_STD) / 3, dtype=x.dtype, device=x.device)
        return (x - mean) / std
