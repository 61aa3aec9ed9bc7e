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
    """``n_copies`` independent SIT copies of each image of ``x`` (B, C, H, W) in [0, 1], all built
    at once: (n_copies * B, C, H, W), copy-major (``out[k * B + i]`` is copy ``k`` of image ``i``),
    same dtype and device, differentiable w.r.t. ``x``.

    Each copy of each image draws its own ``blocks x blocks`` cut points, operations and
    parameters (the reference draws cut points and operations once per batch). All randomness
    comes from ``generator`` (None: a fresh one seeded 0 on ``x``'s device); the same seed gives
    bit-identical copies on the CPU.
    """
    check_image_batch(x, "SIT (structure-invariant transformation)")
    generator = _default_generator(x, generator)
    plan = SITPlan.sample(x.shape, n_copies, blocks, ops, generator, device=x.device)
    log.debug("SIT: %d copies of %d images %s, %dx%d blocks, ops %s", n_copies, x.shape[0],
              tuple(x.shape[1:]), blocks, blocks, ",".join(plan.ops))
    return apply_structure_invariant_plan(x, plan)


def structure_invariant_transform(x: torch.Tensor, blocks: int = 3, ops: str | Sequence[str] = PAPER_OPS,
                                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One SIT copy of each image: ``x`` (B, C, H, W) in [0, 1] -> same shape, dtype and device.

    Block ``(i, j)`` of image ``b`` becomes ``op_bij(block)`` with ``op_bij`` drawn uniformly from
    ``ops`` (a preset name, ``;``-separated names, or a sequence; default the paper's 10
    operations) at cut points drawn per image. See the module docstring for the operations.
    """
    return structure_invariant_copies(x, 1, blocks, ops, generator)
