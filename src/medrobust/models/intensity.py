"""Intensity conventions: how a network expects its input scaled.

medrobust's currency is always [0, 1]; each :class:`~medrobust.models.classifier.Classifier`
maps it to its network's convention inside ``forward``, so an attack budget is always in
grey levels of the stored image.
"""

from __future__ import annotations

import functools
from enum import Enum

import torch

from medrobust.specs.contract_names import intensity_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Intensity(str, Enum):
    """How a network's training scaled its input; :meth:`apply` maps [0, 1] images to it.

    Attributes:
        UNIT: ``"unit"``, [0, 1] as stored (also accepted as ``"none"``).
        IMAGENET: ``"imagenet"``, ``(x - mean) / std`` with ImageNet statistics.
        SYMMETRIC: ``"symmetric"``, [-1, 1] (also accepted as ``"[-1,1]"``).
        BYTE: ``"byte"``, [0, 255] (also accepted as ``"[0,255]"``).
    """

    UNIT = "unit"  # [0, 1] as stored (also accepted as "none")
    IMAGENET = "imagenet"  # (x - mean) / std with ImageNet statistics
    SYMMETRIC = "symmetric"  # [-1, 1]: 2x - 1 (also accepted as "[-1,1]")
    BYTE = "byte"  # [0, 255]: 255 x (also accepted as "[0,255]")

    @classmethod
    def parse(cls, value: "str | Intensity") -> "Intensity":
        """The convention named ``value`` (a member, a name or an alias); ValueError naming the known ones."""
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
        mean, std = _imagenet_statistics(x.shape[1] == 3, x.dtype, x.device)
        return (x - mean) / std


@functools.lru_cache(maxsize=16)
def _imagenet_statistics(rgb: bool, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std, per channel (1, 3, 1, 1) for RGB or their channel averages for grey,
    made once per dtype and device: a forward pass on a GPU copies nothing from the host."""
    if rgb:
        return (torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1).to(device),
                torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1).to(device))
    return (torch.tensor(sum(IMAGENET_MEAN) / 3, dtype=dtype).to(device),
            torch.tensor(sum(IMAGENET_STD) / 3, dtype=dtype).to(device))
