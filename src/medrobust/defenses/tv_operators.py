"""The discrete gradient of an image or a volume, its adjoint, and isotropic total variation.

Forward differences with Neumann (reflecting) boundary conditions, as in Chambolle (2004)
and scikit-image::

    (grad u)_y[i, j] = u[i+1, j] - u[i, j]   for i < H-1,   0 on the last row
    (grad u)_x[i, j] = u[i, j+1] - u[i, j]   for j < W-1,   0 on the last column

and, for volumes (D, H, W), the same along depth first: ``(grad u)_z``, ``(grad u)_y``,
``(grad u)_x``. ``divergence`` is minus the adjoint of ``gradient`` (``<grad u, p> = -<u, div p>``),
and ``||grad||^2 <= 4 n`` in n dimensions (8 for images), the constant the step sizes of the TV
solvers rest on.

**Anisotropic voxels.** A CT volume's slices are often thicker than its pixels are wide (5 mm
slices of 0.5 mm pixels). With the voxel spacing ``s_a`` (mm) along each axis the differences are
weighted, ``(grad_s u)_a = w_a (u[i + e_a] - u[i])`` with

    w_a = min_b(s_b) / s_a        (:func:`spacing_weights`)

i.e. the difference per millimetre, ``(u[i + e_a] - u[i]) / s_a``, scaled by the finest spacing so
the finest axis keeps weight 1: a 10 HU step between two 5 mm slices is a tenth of the gradient of
the same step between two 0.5 mm pixels. The weighted TV, ``sum_i |grad_s u|_i``, is then the
discrete integral of ``|nabla u|`` over the volume in units of the finest spacing (the voxel
volume is a constant factor absorbed in the weight ``lambda``). Isotropic spacing gives every
weight 1: the unweighted operators above (scikit-image's ``denoise_tv_chambolle`` on an n-D
array). The adjoint is ``div_s p = div(w p)``, and ``||grad_s||^2 <= 4 sum_a w_a^2``
(:func:`gradient_norm_squared`).

All functions work on tensors with any leading batch/channel dimensions (the last
``spatial_dims`` are the image's), on any device, and are differentiable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

GRADIENT_NORM_SQUARED = 8.0
"""An upper bound of ``||grad||^2`` for 2-D forward differences (Chambolle 2004, Theorem 3.1)."""

Weights = tuple[float, ...] | None
"""One weight per spatial axis (:func:`spacing_weights`), or None: every weight 1."""


def spacing_weights(spacing: Sequence[float] | None, spatial_dims: int) -> Weights:
    """The difference weights ``w_a = min(spacing) / spacing_a`` of voxels of ``spacing`` (one
    positive length per spatial axis, depth first: (dz, dy, dx), or (dy, dx) for images); None
    when the spacing is None or isotropic (every weight 1).

    >>> spacing_weights((5.0, 0.5, 0.5), 3), spacing_weights((1.0, 1.0), 2), spacing_weights(None, 3)
    ((0.1, 1.0, 1.0), None, None)
    """
    if spacing is None:
        return None
    values = tuple(float(s) for s in spacing)
    if len(values) != spatial_dims or not all(s > 0 and s < float("inf") for s in values):
        raise ValueError(f"spacing {values}: give one positive length per spatial axis ({spatial_dims}), "
                         "depth first (e.g. 5,0.5,0.5 for 5 mm slices of 0.5 mm pixels)")
    finest = min(values)
    weights = tuple(finest / s for s in values)
    return None if all(w == 1.0 for w in weights) else weights


def gradient_norm_squared(spatial_dims: int = 2, weights: Weights = None) -> float:
    """An upper bound of ``||grad_s||^2``: ``4 sum_a w_a^2`` (8 for unweighted images, 12 for volumes)."""
    if weights is None:
        return 4.0 * spatial_dims
    return 4.0 * sum(w * w for w in weights)


def _axis_pad(k: int, before: int, after: int) -> tuple[int, ...]:
    """``F.pad``'s tuple padding the ``k``-th dimension from the end (1: the last) by (before, after)."""
    return (0, 0) * (k - 1) + (before, after)


def gradient(u: torch.Tensor, spatial_dims: int = 2, weights: Weights = None) -> tuple[torch.Tensor, ...]:
    """Forward differences along each spatial axis (depth, rows, columns), zero on the last slice
    along that axis: ``(gy, gx)`` for images, ``(gz, gy, gx)`` for volumes; weighted by ``weights``."""
    out = []
    for a in range(spatial_dims):
        k = spatial_dims - a  # the axis' place from the end
        n = u.shape[-k]
        g = F.pad(u.narrow(-k, 1, n - 1) - u.narrow(-k, 0, n - 1), _axis_pad(k, 0, 1))
        out.append(g if weights is None or weights[a] == 1.0 else g * weights[a])
    return tuple(out)


def divergence(*components: torch.Tensor, weights: Weights = None) -> torch.Tensor:
    """``div p = -grad^T p``: backward differences of a dual field (one component per spatial
    axis, in :func:`gradient`'s order) whose last slice along its axis is zero, as every field
    built from :func:`gradient` is; weighted: ``div(w p)``."""
    dims = len(components)
    total: torch.Tensor | None = None
    for a, p in enumerate(components):
        if weights is not None and weights[a] != 1.0:
            p = p * weights[a]
        k = dims - a
        shifted = F.pad(p.narrow(-k, 0, p.shape[-k] - 1), _axis_pad(k, 1, 0))
        total = p - shifted if total is None else total + p - shifted
    assert total is not None
    return total


def gradient_magnitude(u: torch.Tensor, spatial_dims: int = 2, weights: Weights = None) -> torch.Tensor:
    """``|grad u|`` per pixel (voxel): ``sqrt(gy^2 + gx^2)`` (volumes: ``sqrt(gz^2 + gy^2 + gx^2)``)."""
    parts = gradient(u, spatial_dims, weights)
    squared = parts[0] * parts[0]
    for g in parts[1:]:
        squared = squared + g * g
    return torch.sqrt(squared)


def total_variation(u: torch.Tensor, spatial_dims: int = 2, weights: Weights = None) -> torch.Tensor:
    """Isotropic TV summed over the last ``spatial_dims`` dimensions (one value per leading index)::

        TV(u) = sum_ij sqrt((u[i+1,j] - u[i,j])^2 + (u[i,j+1] - u[i,j])^2)

    the study's definition, with differences across the image border taken as zero (volumes:
    the three differences, weighted by the voxel spacing, module docstring).
    """
    return gradient_magnitude(u, spatial_dims, weights).sum(dim=tuple(range(-spatial_dims, 0)))


# --- in-place forms for the solvers' inner loops (no autograd, preallocated buffers) -----------
# The buffers carry the views their passes use, made once per buffer rather than once per
# iteration (a view costs about a microsecond of dispatch, a tenth of a pass on a 224 px image).

def image_norms(t: torch.Tensor) -> torch.Tensor:
    """(B,) L2 norm of each image of a batch."""
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)


class ImageBuffer:
    """Images (B, C, H, W) or volumes (B, C, D, H, W) with their shifted views along each spatial
    axis (depth, rows, columns): ``hi[a]`` (indices 1..n-1), ``lo[a]`` (0..n-2); and ``spread``
    (B, 1, C, ...), which broadcasts over a dual field's components."""

    __slots__ = ("data", "hi", "lo", "spread")

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data
        axes = range(2, data.ndim)
        self.hi = tuple(data.narrow(d, 1, data.shape[d] - 1) for d in axes)
        self.lo = tuple(data.narrow(d, 0, data.shape[d] - 1) for d in axes)
        self.spread = data.unsqueeze(1)


class DualBuffer:
    """A dual field (B, n, C, ...), component ``a`` along spatial axis ``a`` (images: 0 along H,
    1 along W; volumes: 0 along D, then H, W), whose last slice along its own axis is zero (as for
    every field built by :func:`gradient_into`), with ``parts[a]`` the components and ``inner[a]``
    the views of the parts that are not zero."""

    __slots__ = ("data", "parts", "inner")

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data
        self.parts = tuple(data[:, a] for a in range(data.shape[1]))
        # component a lives along spatial axis a, dimension 2 + a of the component (B, C, ...)
        self.inner = tuple(p.narrow(2 + a, 0, p.shape[2 + a] - 1) for a, p in enumerate(self.parts))

    @classmethod
    def zeros(cls, like: torch.Tensor) -> DualBuffer:
        """A zero field for images shaped like ``like`` (B, C, H, W) or volumes (B, C, D, H, W)."""
        return cls(torch.zeros((like.shape[0], like.ndim - 2, *like.shape[1:]), dtype=like.dtype, device=like.device))

    def squared_magnitude_into(self, out: torch.Tensor) -> torch.Tensor:
        """``out = y^2 + x^2`` per pixel (volumes: ``z^2 + y^2 + x^2``)."""
        torch.mul(self.parts[0], self.parts[0], out=out)
        for p in self.parts[1:]:
            out.addcmul_(p, p)
        return out


def gradient_into(out: DualBuffer, u: ImageBuffer, weights: Weights = None) -> DualBuffer:
    """``out = grad u`` (forward differences, weighted by ``weights``; the zero last slices of
    ``out`` stay zero)."""
    for a, (hi, lo, inner) in enumerate(zip(u.hi, u.lo, out.inner)):
        torch.sub(hi, lo, out=inner)
        if weights is not None and weights[a] != 1.0:
            inner.mul_(weights[a])
    return out


def add_divergence_into(out: ImageBuffer, base: torch.Tensor, p: DualBuffer, scale: float,
                        weights: Weights = None) -> ImageBuffer:
    """``out = base + scale * div(w p)``; ``out`` must not alias ``p``."""
    for a, (part, inner, hi) in enumerate(zip(p.parts, p.inner, out.hi)):
        alpha = scale if weights is None else scale * weights[a]
        if a == 0:
            torch.add(base, part, alpha=alpha, out=out.data)
        else:
            out.data.add_(part, alpha=alpha)
        hi.sub_(inner, alpha=alpha)
    return out
