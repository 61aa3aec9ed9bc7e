"""The study's training augmentation, batched on the device and seeded.

Keras ``ImageDataGenerator(horizontal_flip=True, zoom_range=0.2, rotation_range=15,
width_shift_range=0.1, height_shift_range=0.1)``: per image, a horizontal flip with
probability 1/2, independent zoom factors for width and height in [0.8, 1.2], a rotation in
[-15, 15] degrees and shifts of up to 10% of the width and height, with nearest-edge fill.
Here all images of a batch are warped at once by one ``affine_grid`` + ``grid_sample``;
randomness comes only from the ``torch.Generator`` passed in. Training data only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    horizontal_flip: bool = True
    zoom: float = 0.2
    rotation_deg: float = 15.0
    width_shift: float = 0.1
    height_shift: float = 0.1

    @property
    def is_identity(self) -> bool:
        return not self.horizontal_flip and self.zoom == 0 and self.rotation_deg == 0 and \
            self.width_shift == 0 and self.height_shift == 0


NO_AUGMENTATION = AugmentConfig(horizontal_flip=False, zoom=0.0, rotation_deg=0.0, width_shift=0.0, height_shift=0.0)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_affine(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch (B, C, H, W) in [0, 1]; the random draws are made on the CPU generator
    so results do not depend on the device."""
    if config.is_identity:
        return x
    b = x.shape[0]
    angle = _uniform(b, -config.rotation_deg, config.rotation_deg, generator) * (math.pi / 180.0)
    zx = _uniform(b, 1.0 - config.zoom, 1.0 + config.zoom, generator)
    zy = _uniform(b, 1.0 - config.zoom, 1.0 + config.zoom, generator)
    # shifts as fractions of the size; affine_grid works in [-1, 1], i.e. 2 units per image
    tx = _uniform(b, -config.width_shift, config.width_shift, generator) * 2.0
    ty = _uniform(b, -config.height_shift, config.height_shift, generator) * 2.0
    flip = torch.rand(b, generator=generator) < 0.5 if config.horizontal_flip else torch.zeros(b, dtype=torch.bool)
    sx = torch.where(flip, -zx, zx)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output coordinates to input coordinates: rotate, then scale (zoom), then shift
    theta = torch.stack(
        [torch.stack([cos * sx, -sin * zy, tx], dim=1), torch.stack([sin * sx, cos * zy, ty], dim=1)], dim=1
    ).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp_(0.0, 1.0)
