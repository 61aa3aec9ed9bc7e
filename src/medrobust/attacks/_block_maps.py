"""Block-local linear maps along one image axis, for SIT's ``resize`` and ``dct`` operations.

An image axis of length ``size`` is split into blocks (``start``, ``length`` known per
position); an operation that acts on a block as ``M_L @ block`` (rows) or ``block @ M_L^T``
(columns), with ``M_L`` depending only on the block length ``L``, acts on the whole axis as a
block-diagonal matrix. Both helpers apply every block's map at once for a batch of images,
looking ``M_L`` up in a table of the distinct lengths present (the only Python loop is over
those lengths, and each length's matrix is computed once per process):

- :func:`sparse_along` for maps with at most 4 non-zeros per row (bilinear down-then-up
  resizing): 4 gathers and multiply-adds, O(pixels);
- :func:`dense_along` for dense maps (the DCT low-pass projection): a batched product with
  the per-image block-diagonal matrix, O(pixels x size).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

TAPS = 4


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


@functools.lru_cache(maxsize=4096)
def _taps(matrix: Callable[[int], torch.Tensor], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, 4) column indices and weights of the non-zeros of each row of ``matrix(L)``."""
    m = matrix(length)
    if int((m != 0).sum(dim=1).max()) > TAPS:
        raise ValueError(f"the block map has more than {TAPS} non-zeros per row; use dense_along")
    order = torch.argsort((m == 0).to(torch.int8), dim=1, stable=True)[:, :TAPS]  # non-zeros first
    weight = m.gather(1, order)
    if order.shape[1] < TAPS:  # blocks shorter than 4: pad with zero-weight taps
        pad = TAPS - order.shape[1]
        order = torch.cat([order, order[:, :1].expand(-1, pad)], dim=1)
        weight = torch.cat([weight, weight.new_zeros(length, pad)], dim=1)
    return order, weight


def _offsets(length: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Per position, where the table of its block length starts in the packed tables (one per
    distinct length, in ``torch.unique`` order, of ``sizes`` rows each)."""
    lengths = torch.unique(length)
    size_t = torch.tensor(sizes, device=length.device)
    return (torch.cumsum(size_t, 0) - size_t)[torch.searchsorted(lengths, length)]


def sparse_along(x: torch.Tensor, start: torch.Tensor, length: torch.Tensor, dim: int,
                 matrix: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """Apply ``matrix(L)`` (at most 4 non-zeros per row) to every block of axis ``dim`` (2: rows,
    3: columns) of ``x`` (m, C, H, W); ``start``/``length`` (m, size) describe each position's block."""
    m, c, h, w = x.shape
    size = x.shape[dim]
    values = torch.unique(length).tolist()
    taps = [_taps(matrix, v) for v in values]
    index_table = torch.cat([t[0] for t in taps]).to(x.device)
    weight_table = torch.cat([t[1] for t in taps]).to(device=x.device, dtype=x.dtype)
    row_offset = _offsets(length, values)
    local = torch.arange(size, device=x.device) - start
    row = row_offset + local  # (m, size): this position's row of its length's table
    source = start.unsqueeze(-1) + index_table[row]  # (m, size, 4)
    weight = weight_table[row]
    shape = (m, 1, size, 1) if dim == 2 else (m, 1, 1, size)
    out = None
    for t in range(TAPS):
        term = x.gather(dim, source[..., t].view(shape).expand(m, c, h, w)) * weight[..., t].view(shape)
        out = term if out is None else out + term
    assert out is not None
    return out


def dense_along(start: torch.Tensor, length: torch.Tensor, size: int, matrix: Callable[[int], torch.Tensor],
                dtype: torch.dtype) -> torch.Tensor:
    """(m, size, size): per image, the block-diagonal matrix with ``matrix(L)`` on each block of
    the axis, gathered from the packed matrices of the distinct lengths (plus a trailing zero)."""
    values = torch.unique(length).tolist()
    mats = [matrix(v).flatten() for v in values]
    flat = torch.cat([*mats, mats[0].new_zeros(1)]).to(device=start.device, dtype=dtype)
    offset = _offsets(length, [v * v for v in values])
    local = torch.arange(size, device=start.device) - start  # offset inside the block
    index = (offset + local * length).unsqueeze(2) + local.unsqueeze(1)
    same_block = start.unsqueeze(2) == start.unsqueeze(1)
    return flat[torch.where(same_block, index, flat.numel() - 1)]
