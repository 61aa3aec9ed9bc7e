"""The one check that a tensor is medrobust's currency: a float image batch (B, C, H, W) in [0, 1].

Every room that takes images at its boundary (a model's forward, an attack, a defense, a
detector, the benign changes) asks :func:`check_image_batch` instead of writing its own test,
so the refusals read the same everywhere: who refused, the shape or range expected, what was
given, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

RANGE_TOLERANCE = 1e-5
"""How far outside [0, 1] an input may stray (float rounding) before it is refused."""


class ImageBatchError(ValueError, TypeError):
    """A tensor that is not a float image batch (B, C, H, W) in [0, 1].

    Both a ``ValueError`` and a ``TypeError``: the checks it replaces raised one or the other
    for a wrong dtype, and callers catch either.
    """


def check_image_batch(x: object, who: str, *, channels: int | Sequence[int] | None = None,
                      floating: bool = True, unit_range: bool = False,
                      tolerance: float = RANGE_TOLERANCE) -> None:
    """Raise :class:`ImageBatchError` naming ``who`` unless ``x`` is an image batch.

    Always: a ``torch.Tensor`` with 4 dimensions (B, C, H, W). ``channels``: the allowed C
    (one int or several; None: any). ``floating``: a floating-point dtype. ``unit_range``: every
    value in ``[-tolerance, 1 + tolerance]`` (one device synchronisation; empty batches pass).
    """
    if not isinstance(x, torch.Tensor):
        raise ImageBatchError(f"{who}: expected a torch.Tensor of images (B, C, H, W), got {type(x).__name__}")
    allowed = None if channels is None else ((channels,) if isinstance(channels, int) else tuple(channels))
    if x.ndim != 4 or (allowed is not None and x.shape[1] not in allowed):
        shape = "(B, C, H, W)" if allowed is None else " or ".join(f"(B, {c}, H, W)" for c in allowed)
        hint = "; add the batch/channel dimension with x[None] or x[:, None]" if x.ndim in (2, 3) else ""
        raise ImageBatchError(f"{who}: expected images of shape {shape}, got shape {tuple(x.shape)}{hint}")
    if floating and not x.is_floating_point():
        raise ImageBatchError(f"{who}: expected float images in [0, 1], got dtype {x.dtype}; convert with x.float() / 255")
    if not unit_range or x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if not (lo >= -tolerance and hi <= 1.0 + tolerance):
        raise ImageBatchError(f"{who}: images must lie in [0, 1] (medrobust's currency), got values in "
                              f"[{lo:.4g}, {hi:.4g}]; scale them first (e.g. x / 255 for 8-bit images)")
