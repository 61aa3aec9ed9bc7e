"""No defense (``"none"``): the baseline a defense comparison starts from."""

from __future__ import annotations

import torch

from medrobust.defenses.base import Defense
from medrobust.defenses.registry import register_defense


@register_defense("none")
class Identity(Defense):
    """No defense: returns a copy of the input (the baseline in defense comparisons).

    Registered as ``"none"``; ``D(x) = x``, differentiable; no parameters.

    Shape:
        - x: (B, C, H, W) float in [0, 1].
        - Output: (B, C, H, W), a copy of ``x``.

    Example:

    >>> import torch
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> torch.equal(Identity()(x), x), Identity().spec()
    (True, 'none')
    """

    differentiable = True

    def __init__(self) -> None:
        super().__init__()

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return x.clone()
