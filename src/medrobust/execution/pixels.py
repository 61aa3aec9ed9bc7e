"""The 8-bit pixel grid: what a PNG (or the run's batch files) stores of an image in [0, 1]
(:data:`~medrobust.data.stored_grid.EIGHT_BIT`, the grid object every modality has).

Every image an attack produces is rounded to this grid before it is scored, because that is
what an attacker can deliver to a PACS; batch files store images as uint8 on it, exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from medrobust.data.stored_grid import EIGHT_BIT


def quantise_8bit(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] rounded to the 8-bit grey-level grid: what a PNG stores, so what is
    scored is what a file written from it holds.

    Args:
        x: images in [0, 1].

    Returns:
        ``round(255 x) / 255``, on ``x``'s device and of its dtype.

    Shape:
        - x: any, e.g. (B, C, H, W).
        - Output: the same as ``x``.
    """
    return EIGHT_BIT.round(x)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Grey images as the bytes a batch file stores (exact for images on the 8-bit grid).

    Args:
        x: grey images in [0, 1] on the 8-bit grid, on any device (only channel 0 is kept).

    Returns:
        ``rint(255 x)`` as a uint8 numpy array, on the CPU.

    Shape:
        - x: (B, 1, H, W).
        - Output: (B, H, W).
    """
    return np.rint(x[:, 0].detach().cpu().numpy() * 255.0).astype(np.uint8)


def from_uint8(a: np.ndarray) -> torch.Tensor:
    """Stored bytes back as grey images in [0, 1] (the inverse of :func:`to_uint8`).

    Args:
        a: uint8 grey levels.

    Returns:
        ``a / 255`` as a float32 tensor on the CPU, with a channel axis.

    Shape:
        - a: (B, H, W).
        - Output: (B, 1, H, W).
    """
    return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)
