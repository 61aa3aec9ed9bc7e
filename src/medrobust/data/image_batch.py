"""The one check that a tensor is medrobust's currency: a float image batch (B, C, H, W) in [0, 1],
or a batch of volumes (B, C, D, H, W) in [0, 1] (CT, MRI: D slices of H x W).

Every room that takes images at its boundary (a model's forward, an attack, a defense, a
detector, the benign changes) asks :func:`check_image_batch` instead of writing its own test,
so the refusals read the same everywhere: who refused, the shape or range expected, what was
given, and how to fix it. A room that cannot work on volumes (JPEG, SIA's 2-D block transforms) passes
the reason as ``volumes="..."``, and a volume it is given is refused with that reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

RANGE_TOLERANCE = 1e-5
"""How far outside [0, 1] an input may stray (float rounding) before it is refused."""


class ImageBatchError(ValueError, TypeError):
    """A tensor that is not a float image batch (B, C, H, W) (or volumes (B, C, D, H, W)) in [0, 1].

    Both a ``ValueError`` and a ``TypeError``: the checks it replaces raised one or the other
    for a wrong dtype, and callers catch either.
    """


def check_image_batch(x: object, who: str, *, channels: int | Sequence[int] | None = None,
                      floating: bool = True, unit_range: bool = False,
                      tolerance: float = RANGE_TOLERANCE, volumes: bool | str = True) -> None:
    """Raise :class:`ImageBatchError` naming ``who`` unless ``x`` is an image batch.

    Always: a ``torch.Tensor`` with 4 dimensions (B, C, H, W), or 5 (B, C, D, H, W) when
    ``volumes`` is True (the default). ``volumes``: a sentence instead of True says why ``who``
    cannot take volumes, and a 5-D ``x`` is refused with it. ``channels``: the allowed C
    (one int or several; None: any). ``floating``: a floating-point dtype. ``unit_range``: every
    value in ``[-tolerance, 1 + tolerance]`` (one device synchronisation; empty batches pass).

    >>> check_image_batch(torch.zeros(1, 1, 4, 8, 8), "tv")  # a volume
    >>> check_image_batch(torch.zeros(1, 1, 4, 8, 8), "jpeg", volumes="JPEG compresses 2-D images")
    Traceback (most recent call last):
    ...
    medrobust.data.image_batch.ImageBatchError: jpeg: refuses volumes (B, C, D, H, W), got shape (1, 1, 4, 8, 8): ...
    """
    accepted = "(B, C, H, W) or volumes (B, C, D, H, W)" if volumes is True else "(B, C, H, W)"
    if not isinstance(x, torch.Tensor):
        raise ImageBatchError(f"{who}: expected a torch.Tensor of images {accepted}, got {type(x).__name__}")
    if x.ndim == 5 and volumes is not True:
        reason = volumes or "it works on 2-D images only"
        raise ImageBatchError(f"{who}: refuses volumes (B, C, D, H, W), got shape {tuple(x.shape)}: {reason}")
    allowed = None if channels is None else ((channels,) if isinstance(channels, int) else tuple(channels))
    if x.ndim not in (4, 5) or (allowed is not None and x.shape[1] not in allowed):
        if allowed is None:
            shape = accepted
        else:
            shape = " or ".join(f"(B, {c}, H, W)" for c in allowed)
            if volumes is True:
                shape += " or volumes " + " or ".join(f"(B, {c}, D, H, W)" for c in allowed)
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


def is_volume_batch(x: torch.Tensor) -> bool:
    """Whether ``x`` is a batch of volumes (B, C, D, H, W) rather than images (B, C, H, W)."""
    return x.ndim == 5
