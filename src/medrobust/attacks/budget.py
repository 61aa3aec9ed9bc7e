"""Perturbation budgets: L-infinity and L2 balls around the clean image, intersected with
the valid image range [0, 1], plus quantisation to the storage bit depth inside the ball."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _per_image(t: torch.Tensor) -> tuple[int, ...]:
    return (-1,) + (1,) * (t.ndim - 1)


@dataclass(frozen=True)
class Budget:
    """An ``eps``-ball in the ``norm`` ("linf" or "l2") around the clean image, in units of the
    stored image ([0, 1]; eps = 8/255 is 8 grey levels of an 8-bit image).

    ``project`` is ``Clip_{[0,1] and eps-ball around x}``: for L-inf ``min(max(x', x - eps),
    x + eps)`` per pixel, for L2 ``x + delta * min(1, eps / ||delta||_2)`` per image; then [0, 1].

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
        """A uniform random point of the ball (L-inf: uniform per pixel; L2: uniform in the ball)."""
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
        """One ascent step: ``alpha * sign(direction)`` (L-inf) or ``alpha * direction / ||direction||_2`` (L2)."""
        if self.norm == "linf":
            return x_adv + alpha * direction.sign()
        norm = direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(_per_image(direction))
        return x_adv + alpha * direction / norm

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``Clip_{[0,1] and eps-ball around x}(x_adv)``."""
        if self.norm == "linf":
            x_adv = torch.minimum(torch.maximum(x_adv, x - self.eps), x + self.eps)
        else:
            delta = x_adv - x
            norm = delta.flatten(1).norm(dim=1).view(_per_image(delta))
            delta = delta * torch.clamp(self.eps / norm.clamp_min(1e-12), max=1.0)
            x_adv = x + delta
        return x_adv.clamp(0.0, 1.0)

    def distance(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) distance in this norm."""
        delta = (x_adv - x).flatten(1)
        return delta.abs().amax(dim=1) if self.norm == "linf" else delta.norm(dim=1)

    def contains(self, x_adv: torch.Tensor, x: torch.Tensor, tol: float = 1e-6) -> bool:
        in_range = bool((x_adv >= -tol).all() and (x_adv <= 1 + tol).all())
        return in_range and bool((self.distance(x_adv, x) <= self.eps + tol).all())


def quantize_within(x_adv: torch.Tensor, x: torch.Tensor, budget: Budget, bits: int = 8) -> torch.Tensor:
    """Round ``x_adv`` to the ``bits``-bit grid (what a PNG or DICOM stores) without leaving
    the budget: each pixel goes to the nearest level inside the L-inf ball (and [0, 1]); for
    L2, pixels whose rounding grows the perturbation are rounded towards the clean value instead
    when needed. The result reaches a PACS unchanged."""
    levels = float(2**bits - 1)
    q = torch.round(x_adv * levels) / levels
    if budget.norm == "linf":
        lo = torch.ceil(((x - budget.eps) * levels).clamp(min=0.0) - 1e-4) / levels
        hi = torch.floor(((x + budget.eps) * levels).clamp(max=levels) + 1e-4) / levels
        return torch.minimum(torch.maximum(q, lo), hi).clamp(0.0, 1.0)
    over = budget.distance(q, x) > budget.eps + 1e-6  # no branch on it: nothing is read back from the device
    toward = torch.where((q - x).abs() > (x_adv - x).abs(), torch.where(q > x, torch.floor(x_adv * levels),
                                                                     torch.ceil(x_adv * levels)) / levels, q)
    return torch.where(over.view(_per_image(q)), toward, q).clamp(0.0, 1.0)
