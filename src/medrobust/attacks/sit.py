"""The Structure Invariant Transformation (SIT): ``n`` random block-wise copies of each image.

Wang, Zhang & Zhang, "Structure Invariant Transformation for better Adversarial
Transferability", ICCV 2023. With random cut points ``0 = r_0 < ... < r_s = H`` and
``0 = c_0 < ... < c_s = W`` and an operation ``op_ij`` drawn uniformly from ``ops`` per block,

    SIT(x)[:, r_i:r_{i+1}, c_j:c_{j+1}] = op_ij(x[:, r_i:r_{i+1}, c_j:c_{j+1}])

SIA averages the input gradient over ``N`` such copies (:mod:`medrobust.attacks.sia`).

Two parts, one file each: :mod:`medrobust.attacks.sit_plan` draws every random choice
(:class:`SITPlan`: cut points, operations, parameters; the operations and presets are defined
there) and :mod:`medrobust.attacks.sit_kernel` builds the copies a plan describes with a
hand-written gradient (:func:`apply_structure_invariant_plan`). This module holds the entry
points, :func:`structure_invariant_copies` and :func:`structure_invariant_transform`, and
re-exports the names of both parts.

Volumes (B, C, D, H, W) are refused (:data:`SIT_VOLUME_REFUSAL`): the operations are 2-D
(rotations, flips, 2-D DCT masks, resizes of an H x W block), and extending them along depth
would make a different transformation than the paper's, with no evidence of transferability.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from medrobust.attacks.sit_kernel import FACTOR_OPS, MAPPED_OPS, PIXEL_OPS, apply_structure_invariant_plan
from medrobust.attacks.sit_plan import (
    ALL_OPS,
    DCT_CUT_RATIO,
    DROPOUT_P,
    EXTRA_OPS,
    NOISE_BOUND,
    PAPER_OPS,
    RESIZE_FACTOR,
    SIT_PRESETS,
    TRANSFERATTACK_OPS,
    SITPlan,
    resolve_ops,
)
from medrobust.data.image_batch import check_image_batch

SIT_VOLUME_REFUSAL = ("SIA's structure-invariant transformation is defined on 2-D images (block rotations, flips, "
                      "2-D DCT masks and resizes of H x W blocks), and a depth-wise version would be another attack "
                      "than the paper's, with no evidence that it transfers; attack volumes with pgd, mifgsm, apgd or "
                      "square, or attack the slices with a 2-D model")
"""Why SIT (and so SIA) refuses volumes (B, C, D, H, W), the sentence the refusal gives."""

__all__ = [
    "ALL_OPS",
    "DCT_CUT_RATIO",
    "DROPOUT_P",
    "EXTRA_OPS",
    "FACTOR_OPS",
    "MAPPED_OPS",
    "NOISE_BOUND",
    "PAPER_OPS",
    "PIXEL_OPS",
    "RESIZE_FACTOR",
    "SIT_PRESETS",
    "TRANSFERATTACK_OPS",
    "SITPlan",
    "apply_structure_invariant_plan",
    "resolve_ops",
    "structure_invariant_copies",
    "structure_invariant_transform",
]

log = logging.getLogger(__name__)


def _default_generator(x: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator(device=x.device).manual_seed(0)


def structure_invariant_copies(x: torch.Tensor, n_copies: int = 20, blocks: int = 3,
                               ops: str | Sequence[str] = PAPER_OPS,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_copies`` independent SIT copies of each image of ``x``, all built at once.

    Each copy of each image draws its own ``blocks x blocks`` cut points, operations and
    parameters (the reference draws cut points and operations once per batch). All randomness
    comes from ``generator``; the same seed gives bit-identical copies on the CPU.

    Args:
        x: the images, float in [0, 1].
        n_copies: copies per image, at least 1. Default 20 (the paper's N).
        blocks: s, cut points per side (an s x s grid), from 1 to the image's shorter side.
            Default 3 (the paper's).
        ops: the operations drawn from per block: a preset name (``"paper"``,
            ``"transferattack"``), ``;``-separated names, or a sequence of names (duplicates
            weight the draw); see :mod:`medrobust.attacks.sit_plan` for the operations. Default
            the paper's 10 (:data:`PAPER_OPS`).
        generator: the random stream, on ``x``'s device. Default None: a fresh one seeded 0 there.

    Returns:
        The copies, copy-major (``out[k * B + i]`` is copy ``k`` of image ``i``), same dtype and
        device as ``x``, differentiable with respect to ``x``.

    Shape:
        - x: (B, C, H, W) float in [0, 1].
        - Output: (n_copies * B, C, H, W).

    Example:

    >>> import torch
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> copies = structure_invariant_copies(x, n_copies=5, generator=torch.Generator().manual_seed(1))
    >>> copies.shape, copies.dtype
    (torch.Size([10, 1, 32, 32]), torch.float32)
    >>> torch.equal(copies, structure_invariant_copies(x, n_copies=5, generator=torch.Generator().manual_seed(1)))
    True
    """
    check_image_batch(x, "SIT (structure-invariant transformation)", volumes=SIT_VOLUME_REFUSAL)
    generator = _default_generator(x, generator)
    plan = SITPlan.sample(x.shape, n_copies, blocks, ops, generator, device=x.device)
    log.debug("SIT: %d copies of %d images %s, %dx%d blocks, ops %s", n_copies, x.shape[0],
              tuple(x.shape[1:]), blocks, blocks, ",".join(plan.ops))
    return apply_structure_invariant_plan(x, plan)


def structure_invariant_transform(x: torch.Tensor, blocks: int = 3, ops: str | Sequence[str] = PAPER_OPS,
                                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One SIT copy of each image (:func:`structure_invariant_copies` with ``n_copies = 1``).

    Block ``(i, j)`` of image ``b`` becomes ``op_bij(block)`` with ``op_bij`` drawn uniformly from
    ``ops`` at cut points drawn per image (the formula in the module docstring).

    Args:
        x: the images, float in [0, 1].
        blocks: s, cut points per side (an s x s grid), from 1 to the image's shorter side.
            Default 3.
        ops: a preset name (``"paper"``, ``"transferattack"``), ``;``-separated names, or a
            sequence of names; see :mod:`medrobust.attacks.sit_plan`. Default the paper's 10.
        generator: the random stream, on ``x``'s device. Default None: a fresh one seeded 0 there.

    Returns:
        The transformed images, same shape, dtype and device as ``x``, differentiable with
        respect to ``x``.

    Shape:
        - x: (B, C, H, W) float in [0, 1].
        - Output: (B, C, H, W).
    """
    return structure_invariant_copies(x, 1, blocks, ops, generator)
