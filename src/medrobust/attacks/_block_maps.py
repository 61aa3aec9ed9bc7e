"""Block-local linear maps of SIT's ``resize`` and ``dct`` operations, per block length.

Both act on a block separably: ``M_L @ block`` along its rows and ``block @ M_L^T`` along its
columns, with ``M_L`` depending only on the side length ``L`` (:mod:`medrobust.attacks.sit_kernel`
caches each on the device it needs).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=4096)
def resize_matrix(length: int, factor: float) -> torch.Tensor:
    """(L, L) float64: bilinear (align_corners=False, no antialias) down to ``int(factor L) + 1``
    pixels then back to L along one axis; 2-D bilinear resizing applies it to rows and columns."""
    small = int(length * factor) + 1
    eye_l = torch.eye(length, dtype=torch.float64).unsqueeze(0)
    eye_s = torch.eye(small, dtype=torch.float64).unsqueeze(0)
    down = F.interpolate(eye_l, size=small, mode="linear", align_corners=False)[0].T  # (small, L)
    up = F.interpolate(eye_s, size=length, mode="linear", align_corners=False)[0].T  # (L, small)
    return up @ down


@functools.lru_cache(maxsize=4096)
def dct_lowpass_matrix(length: int, cut_ratio: float) -> torch.Tensor:
    """(L, L) float64 projection ``D_k^T D_k`` onto the first ``k = L - int(cut_ratio L)`` rows of
    the orthonormal DCT-II matrix ``D[f, t] = sqrt(2/L) c_f cos(pi (2t + 1) f / (2L))``,
    ``c_0 = 1/sqrt(2)``, ``c_f = 1`` otherwise: zeroing the high DCT coefficients and inverting."""
    k = length - int(length * cut_ratio)
    t = torch.arange(length, dtype=torch.float64)
    f = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    d = torch.cos(math.pi * (2 * t + 1) * f / (2 * length)) * math.sqrt(2.0 / length)
    d[0] /= math.sqrt(2.0)
    return d[:k].T @ d[:k]
