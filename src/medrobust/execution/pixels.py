"""The 8-bit pixel grid: what a PNG (or the run's batch files) stores of an image in [0, 1].

Every image an attack produces is rounded to this grid before it is scored, because that is
what an attacker can deliver to a PACS; batch files store images as uint8 on it, exactly.
"""

from __future__ import annotations

import numpy as np
import torch


def quantise_8bit(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] rounded to the 8-bit grey-level grid: what a PNG stores, so what is
    scored is what a file written from it holds."""
    return torch.round(x * 255.0) / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 1, H, W) images in [0, 1] on the 8-bit grid -> (B, H, W) uint8 (exact for 8-bit quantised images)."""
    return np.rint(x[:, 0].detach().cpu().numpy() * 255.0).astype(np.uint8)


def from_uint8(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)
