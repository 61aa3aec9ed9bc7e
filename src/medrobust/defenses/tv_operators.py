"""The discrete gradient of an image, its adjoint, and isotropic total variation.

Forward differences with Neumann (reflecting) boundary conditions, as in Chambolle (2004)
and scikit-image::

    (grad u)_y[i, j] = u[i+1, j] - u[i, j]   for i < H-1,   0 on the last row
    (grad u)_x[i, j] = u[i, j+1] - u[i, j]   for j < W-1,   0 on the last column

``divergence`` is minus the adjoint of ``gradient`` (``<grad u, p> = -<u, div p>``), and
``||grad||^2 <= 8`` in two dimensions, the constant the step sizes of the TV solvers rest on.
All functions work on (..., H, W) tensors (any leading batch/channel dimensions), on any
device, and are differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GRADIENT_NORM_SQUARED = 8.0
"""An upper bound of ``||grad||^2`` for 2-D forward differences (Chambolle 2004, Theorem 3.1)."""


def gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gy, gx)``: forward differences along H and W, zero on the last row/column."""
    gy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    gx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
    return gy, gx


def divergence(py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """``div p = -grad^T p``: backward differences of a dual field whose last row (``py``) and
    last column (``px``) are zero, as every field built from :func:`gradient` is."""
    return py - F.pad(py[..., :-1, :], (0, 0, 1, 0)) + px - F.pad(px[..., :, :-1], (1, 0))


def gradient_magnitude(u: torch.Tensor) -> torch.Tensor:
    """``|grad u|`` per pixel: ``sqrt(gy^2 + gx^2)``."""
    gy, gx = gradient(u)
    return torch.sqrt(gy * gy + gx * gx)


def total_variation(u: torch.Tensor) -> torch.Tensor:
    """Isotropic TV summed over the last two dimensions (one value per leading index)::

        TV(u) = sum_ij sqrt((u[i+1,j] - u[i,j])^2 + (u[i,j+1] - u[i,j])^2)

    the study's definition, with differences across the image border taken as zero.
    """
    return gradient_magnitude(u).sum(dim=(-2, -1))


# --- in-place forms for the solvers' inner loops (no autograd, preallocated buffers) -----------

def image_norms(t: torch.Tensor) -> torch.Tensor:
    """(B,) L2 norm of each image of a batch."""
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)


def gradient_into(out: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``out[:, 0], out[:, 1] = grad u`` for ``u`` (B, C, H, W) and ``out`` (B, 2, C, H, W) whose
    last row (component 0) and last column (component 1) are zero and stay so."""
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=out[:, 0, ..., :-1, :])
    torch.sub(u[..., :, 1:], u[..., :, :-1], out=out[:, 1, ..., :, :-1])
    return out


def add_divergence_into(out: torch.Tensor, base: torch.Tensor, p: torch.Tensor, scale: float) -> torch.Tensor:
    """``out = base + scale * div p`` for a dual field ``p`` (B, 2, C, H, W) as built by
    :func:`gradient_into`; ``out`` must not alias ``p``."""
    torch.add(base, p[:, 0], alpha=scale, out=out)
    out[..., 1:, :].sub_(p[:, 0, ..., :-1, :], alpha=scale)
    out.add_(p[:, 1], alpha=scale)
    out[..., :, 1:].sub_(p[:, 1, ..., :, :-1], alpha=scale)
    return out
