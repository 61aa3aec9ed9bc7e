"""Perturbation budgets: L-infinity and L2 balls around the clean image, intersected with
the valid image range [0, 1], plus quantisation to the storage bit depth inside the ball."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medrobust.data.stored_grid import StoredGrid, grid_for_bits


def _per_image(t: torch.Tensor) -> tuple[int, ...]:
    return (-1,) + (1,) * (t.ndim - 1)


@dataclass(frozen=True)
class Budget:
    """An ``eps``-ball in the ``norm`` ("linf" or "l2") around the clean image, in units of the
    stored image ([0, 1]; eps = 8/255 is 8 grey levels of an 8-bit image).

    ``project`` is ``Clip_{[0,1] and eps-ball around x}``: for L-inf ``min(max(x', x - eps),
    x + eps)`` per pixel, for L2 ``x + delta * min(1, eps / ||delta||_2)`` per image; then [0, 1].

    Args:
        eps: the radius, in [0, 1] image units (8/255 = 8 grey levels); must be >= 0.
        norm: ``"linf"`` (per pixel) or ``"l2"`` (per image). Default ``"linf"``.

    Shape:
        Every method takes batches (B, C, H, W) (any shape with the batch first) and returns
        the same shape, except :meth:`distance`: (B,).

    Raises:
        ValueError: ``norm`` is neither ``"linf"`` nor ``"l2"``, or ``eps`` is negative or NaN.

    Example:

    >>> import torch
    >>> x = torch.full((1, 1, 4, 4), 0.5)
    >>> budget = Budget(8 / 255)
    >>> far = budget.project(x + 0.2, x)
    >>> round(float(budget.distance(far, x)[0]) * 255, 4), budget.contains(far, x)
    (8.0, True)
    """

    eps: float
    norm: str = "linf"

    def __post_init__(self) -> None:
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {self.norm!r}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be non-negative, got {self.eps}")

    def random_start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A uniform random point of the ball around ``x``, clipped to [0, 1].

        Args:
            x: (B, C, H, W) clean images in [0, 1].
            generator: the random stream, on ``x``'s device.

        Returns:
            (B, C, H, W), ``x``'s dtype: L-inf, ``x + U(-eps, eps)`` per pixel; L2, a point drawn
            uniformly in the ball per image.
        """
        if self.norm == "linf":
            delta = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * self.eps
        else:
            direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(_per_image(x))
            n = x[0].numel()
            radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / n)
            delta = direction * (radius * self.eps).view(_per_image(x))
        return (x + delta).clamp(0.0, 1.0)

    def step(self, x_adv: torch.Tensor, direction: torch.Tensor, alpha: float) -> torch.Tensor:
        """One ascent step, not projected: ``x_adv + alpha * sign(direction)`` (L-inf) or
        ``x_adv + alpha * direction / ||direction||_2`` per image (L2).

        Args:
            x_adv: (B, C, H, W) current images.
            direction: (B, C, H, W) ascent direction (a gradient or a momentum).
            alpha: step size in [0, 1] image units.

        Returns:
            (B, C, H, W) stepped images (apply :meth:`project` next).
        """
        if self.norm == "linf":
            return x_adv + alpha * direction.sign()
        norm = direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(_per_image(direction))
        return x_adv + alpha * direction / norm

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``Clip_{[0,1] and eps-ball around x}(x_adv)``.

        Args:
            x_adv: (B, C, H, W) candidate images.
            x: (B, C, H, W) clean images, the centre of the ball.

        Returns:
            (B, C, H, W) images in [0, 1] within ``eps`` of ``x``.
        """
        if self.norm == "linf":
            x_adv = torch.minimum(torch.maximum(x_adv, x - self.eps), x + self.eps)
        else:
            delta = x_adv - x
            norm = delta.flatten(1).norm(dim=1).view(_per_image(delta))
            delta = delta * torch.clamp(self.eps / norm.clamp_min(1e-12), max=1.0)
            x_adv = x + delta
        return x_adv.clamp(0.0, 1.0)

    def distance(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The size of each perturbation in this norm.

        Args:
            x_adv: (B, C, H, W) perturbed images.
            x: (B, C, H, W) clean images.

        Returns:
            (B,) ``max |x_adv - x|`` (L-inf) or ``||x_adv - x||_2`` (L2) per image, in [0, 1] units.
        """
        delta = (x_adv - x).flatten(1)
        return delta.abs().amax(dim=1) if self.norm == "linf" else delta.norm(dim=1)

    def contains(self, x_adv: torch.Tensor, x: torch.Tensor, tol: float = 1e-6) -> bool:
        """Whether every image of ``x_adv`` lies in [0, 1] and within ``eps`` of ``x``.

        Args:
            x_adv: (B, C, H, W) perturbed images.
            x: (B, C, H, W) clean images.
            tol: slack for float rounding on both tests. Default 1e-6.

        Returns:
            True when the whole batch is inside (one read from the device).
        """
        in_range = bool((x_adv >= -tol).all() and (x_adv <= 1 + tol).all())
        return in_range and bool((self.distance(x_adv, x) <= self.eps + tol).all())


def quantize_within(x_adv: torch.Tensor, x: torch.Tensor, budget: Budget, bits: int = 8,
                    grid: StoredGrid | None = None) -> torch.Tensor:
    """Round ``x_adv`` to the stored grid (what a PNG or DICOM stores) without leaving
    the budget: each pixel goes to the nearest level inside the L-inf ball (and [0, 1]); for
    L2, pixels whose rounding grows the perturbation are rounded towards the clean value instead
    when needed. The result reaches a PACS unchanged.

    Args:
        x_adv: (B, C, H, W) adversarial images in [0, 1], inside ``budget`` around ``x``.
        x: (B, C, H, W) clean images.
        budget: the ball to stay in.
        bits: bit depth of the grid (levels ``k / (2**bits - 1)``). Default 8.
        grid: the modality's :class:`~medrobust.data.stored_grid.StoredGrid` (e.g.
            :data:`~medrobust.data.stored_grid.CT_HU`: integer HU), instead of ``bits``. Default
            None: :func:`~medrobust.data.stored_grid.grid_for_bits` of ``bits``.

    Returns:
        (B, C, H, W), ``x_adv``'s dtype: on the grid (where the ball holds a grid point), in
        [0, 1] and inside the ball.
    """
    grid = grid or grid_for_bits(bits)
    levels = float(grid.levels)
    q = grid.round(x_adv)
    if budget.norm == "linf":
        lo = torch.ceil(((x - budget.eps) * levels).clamp(min=0.0) - 1e-4) / levels
        hi = torch.floor(((x + budget.eps) * levels).clamp(max=levels) + 1e-4) / levels
        return torch.minimum(torch.maximum(q, lo), hi).clamp(0.0, 1.0)
    over = budget.distance(q, x) > budget.eps + 1e-6  # no branch on it: nothing is read back from the device
    toward = torch.where((q - x).abs() > (x_adv - x).abs(), torch.where(q > x, torch.floor(x_adv * levels),
                                                                     torch.ceil(x_adv * levels)) / levels, q)
    return torch.where(over.view(_per_image(q)), toward, q).clamp(0.0, 1.0)
