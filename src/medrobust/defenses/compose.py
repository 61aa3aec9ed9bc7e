"""Defenses in sequence (``"jpeg+tv"``: JPEG first, then TV) (the identity, ``"none"``, is :mod:`medrobust.defenses.identity`).

A composition is itself a :class:`~medrobust.defenses.base.Defense`: ``randomized`` if any member
is, ``differentiable`` only if every member is. :class:`~medrobust.defenses.defended.DefendedClassifier`
in ``gradient="auto"`` mode differentiates member by member (exact where a member is
differentiable, BPDA where it is not).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from medrobust.data.image_batch import check_image_batch
from medrobust.defenses.base import Defense


class Compose(Defense):
    """Apply ``defenses`` in order. ``name`` is the members' names joined by ``+``.

    ``Compose([D_1, ..., D_n])(x) = D_n(...D_1(x))``; ``"jpeg+tv"`` is the study's hybrid
    defense, ``I_tvm = argmin_u ||I_jpeg - u||^2 + lambda TV(u)`` with ``I_jpeg`` the JPEG round
    trip (JPEG quality 75 and lambda 0.1 by default; the study used quality 50-80 and lambda 0.1).

    A ``generator`` passed to ``forward`` is handed to every randomized member (one stream);
    without it each member uses its own. The composition is ``randomized`` if any member is,
    ``differentiable`` only if every member is, and its ``seed`` is its first randomized member's.

    Args:
        defenses: the members, :class:`~medrobust.defenses.base.Defense` objects, applied in
            order (build them by name with :func:`~medrobust.defenses.registry.build_defense`).
            An empty list is the identity, named ``"none"``.

    Shape:
        - x: (B, C, H, W) float in [0, 1].
        - Output: (B, C, H, W), same dtype and device as ``x``, in [0, 1].

    Raises:
        TypeError: a member is not a ``Defense``.

    Example:

    >>> import torch
    >>> from medrobust.defenses import JPEG, TotalVariation, build_defense, jpeg, tv_denoise
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> hybrid = Compose([JPEG(quality=50), TotalVariation(weight=0.1)])
    >>> hybrid.name, len(hybrid), hybrid.differentiable
    ('jpeg+tv', 2, False)
    >>> torch.equal(hybrid(x), tv_denoise(jpeg(x, 50), 0.1))
    True
    >>> torch.equal(build_defense("jpeg:quality=50+tv")(x), hybrid(x))  # the same, by name
    True
    """

    def __init__(self, defenses: Sequence[Defense]) -> None:
        super().__init__()
        for d in defenses:
            if not isinstance(d, Defense):
                raise TypeError(f"Compose takes Defense objects, got {type(d).__name__}; build them with build_defense")
        self.members = nn.ModuleList(defenses)
        self.name = "+".join(d.name for d in defenses) or "none"
        # The composition's seed is its first randomized member's, so that whoever reseeds a
        # defense by its seed (the runner, per batch) reseeds a composition's members too.
        self.seed = next((d.seed for d in defenses if d.randomized), None)

    @property
    def randomized(self) -> bool:  # type: ignore[override]
        return any(d.randomized for d in self.members)

    @property
    def differentiable(self) -> bool:  # type: ignore[override]
        return all(d.differentiable for d in self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self):  # type: ignore[override]
        return iter(self.members)

    def __getitem__(self, i: int) -> Defense:
        return self.members[i]  # type: ignore[return-value]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, *,
                check_range: bool = True) -> torch.Tensor:
        """Apply the members in order.

        Args:
            x: (B, C, H, W) float images in [0, 1].
            generator: one stream for every randomized member, on ``x``'s device. Default None:
                each randomized member uses its own.
            check_range: as :meth:`Defense.forward`. Default True.

        Returns:
            (B, C, H, W), same dtype and device as ``x``, in [0, 1].
        """
        check_image_batch(x, f"defense {self.name!r}", unit_range=check_range, volumes=self.volumes)
        return x.clone() if x.numel() == 0 else self.transform(x, generator)

    @property  # type: ignore[override]
    def volumes(self) -> bool | str:
        """True when every member takes volumes, else the first refusing member's reason."""
        return next((d.volumes for d in self.members if d.volumes is not True), True)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        for d in self.members:
            x = d.transform(x, (generator or d.generator_for(x.device)) if d.randomized else None)
        return x

    def manual_seed(self, seed: int | None) -> "Compose":
        """Seed the randomized members: the member at position i gets ``seed + i``.

        Args:
            seed: the base seed; None gives every randomized member a fresh random seed. It
                becomes the composition's :attr:`seed`.

        Returns:
            ``self``.
        """
        self.seed = seed
        for i, d in enumerate(self.members):
            if d.randomized:
                d.manual_seed(None if seed is None else seed + i)
        return self

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "randomized": self.randomized, "differentiable": self.differentiable,
                "members": [d.describe() for d in self.members]}

    def spec(self) -> str:
        return "+".join(d.spec() for d in self.members) or "none"

    def extra_repr(self) -> str:
        return ""
