"""Anti-aliased resizing of single-channel images."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) float image in [0, 1] to ``size`` (int for square, or (H, W)).

    Bilinear with anti-aliasing when shrinking (a triangle filter widened by the scale
    factor, as PIL does), so a 1024 px radiograph reduced to 64 px keeps its fine structure
    as averaged intensity instead of aliasing. Returns the input unchanged when the size matches.
    """
    target = (size, size) if isinstance(size, int) else tuple(size)
    if image.shape == target:
        return image
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=target, mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].clamp_(0.0, 1.0).numpy()
