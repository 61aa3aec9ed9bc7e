"""Benign changes a real imaging pipeline makes to an image — the honest test of a
detector's false positive rate.

The study measured its detector against attacked images only. Between the original a
detector would compare with and the image that reaches the model, a real pipeline
re-encodes, re-windows and resizes, and sensors add noise. None of these is an attack, so a
detector that flags them raises false alarms. Four changes, on images (N, C, H, W) in [0, 1]:

``jpeg90``
    Re-encoded as JPEG at quality 90 (the defenses room's ``jpeg`` defense, 8-bit,
    per image).
``rewindow``
    Re-windowed. The stored image is read as a window of level ``L = 0.5`` and width
    ``W = 1`` (it spans [0, 1]). The viewer's window is perturbed per image by relative
    amounts ``a, b ~ Uniform(-max_change, max_change)`` (default 5%)::

        L' = L (1 + a),   W' = W (1 + b)
        x' = clip((x - L') / W' * W + L, 0, 1)

    i.e. the window [L' - W'/2, L' + W'/2] is stretched back onto [0, 1]. The map is affine
    in x with slope ``W / W'`` in [1/1.05, 1/0.95]; at 5% the largest change of a pixel is
    about 0.05 (13 grey levels).
``resize``
    Down by 10% (to ``round(0.9 H) x round(0.9 W)``, bilinear with anti-aliasing) and back
    up to H x W (bilinear), as when an image passes through a viewer or archive at another
    resolution.
``noise``
    Gaussian noise of one grey level, ``x' = clip(x + n, 0, 1)`` with ``n ~ N(0, (1/255)^2)``
    per pixel.

Randomness (rewindow, noise) comes only from the ``torch.Generator`` passed in, drawn in
a fixed order, so the same generator seed gives the same images.

**CT** (data on :data:`~medrobust.data.stored_grid.CT_HU`, ``grid=CT_HU``): what a CT pipeline
changes between two readings of one study is not an 8-bit re-encoding but the scanner's
calibration, its reconstruction and the slice geometry, so the changes are (:data:`CT_BENIGN_CHANGES`),
each rounded back to integer HU (what a DICOM file stores):

``window_shift``
    The stored HU shifted by ``s ~ Uniform(-5, 5)`` HU per image (a recalibration of the HU
    scale: water drifts by a few HU between calibrations; the window a reader sets moves by as
    much): ``x' = round_HU(x + s / 4095)``.
``recon_noise``
    Another reconstruction noise level: Gaussian noise of 3 HU per voxel added (a softer or
    sharper kernel, another dose), ``x' = round_HU(x + n / 4095)``, ``n ~ N(0, 3^2)``.
``slice_shift`` (volumes only)
    The volume moved by one slice along depth (``x'[d] = x[d + 1]``, the last slice repeated), as
    when a patient's scan starts one slice later.
``resample``
    Down by 10% in-plane (each slice to ``round(0.9 H) x round(0.9 W)``, bilinear, anti-aliased)
    and back up, as a viewer or archive at another matrix size does; rounded to integer HU.

Volumes on the 8-bit grid (MedMNIST 3D) keep the radiograph changes that apply to volumes —
``rewindow``, ``resize`` (in-plane), ``noise`` — plus ``slice_shift``; JPEG is left out because it
refuses volumes (:data:`~medrobust.defenses.jpeg_quality.JPEG_VOLUME_REFUSAL`). Radiographs keep
exactly the four changes above. :func:`benign_change_names` says which set applies.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from medrobust.data.image_batch import check_image_batch, is_volume_batch
from medrobust.data.stored_grid import CT_HU, StoredGrid

log = logging.getLogger(__name__)

BENIGN_CHANGES = ("jpeg90", "rewindow", "resize", "noise")
"""The benign changes :func:`benign_changes` makes, in order."""

CT_BENIGN_CHANGES = ("window_shift", "recon_noise", "slice_shift", "resample")
"""The benign changes of CT data (module docstring), in order; ``slice_shift`` for volumes only."""

VOLUME_BENIGN_CHANGES = ("rewindow", "resize", "noise", "slice_shift")
"""The benign changes of volumes on the 8-bit grid, in order (JPEG refuses volumes)."""

WINDOW_LEVEL = 0.5
WINDOW_WIDTH = 1.0
CT_LEVEL_SHIFT_HU = 5.0
"""The largest HU shift of ``window_shift``."""
CT_NOISE_HU = 3.0
"""The standard deviation in HU of ``recon_noise``."""


def benign_change_names(grid: StoredGrid | None = None, volumes: bool = False) -> tuple[str, ...]:
    """The benign changes :func:`benign_changes` makes of data on ``grid`` (None: 8-bit
    radiographs), of volumes (B, C, D, H, W) when ``volumes``.

    >>> benign_change_names(), benign_change_names(CT_HU), benign_change_names(CT_HU, volumes=True)[-2:]
    (('jpeg90', 'rewindow', 'resize', 'noise'), ('window_shift', 'recon_noise', 'resample'), ('slice_shift', 'resample'))
    """
    if grid is not None and grid.unit == CT_HU.unit:
        return CT_BENIGN_CHANGES if volumes else tuple(c for c in CT_BENIGN_CHANGES if c != "slice_shift")
    return VOLUME_BENIGN_CHANGES if volumes else BENIGN_CHANGES


def _per_image(x: torch.Tensor) -> tuple[int, ...]:
    return (-1,) + (1,) * (x.ndim - 1)


def _in_plane(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...] | None]:
    """Images (N, C, H, W) as they are; volumes (N, C, D, H, W) as their slices (N D, C, H, W),
    with the shape to put them back in."""
    if not is_volume_batch(x):
        return x, None
    n, c, d, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w), (n, d, c, h, w)


def _from_plane(slices: torch.Tensor, shape: tuple[int, ...] | None) -> torch.Tensor:
    if shape is None:
        return slices
    return slices.reshape(shape).permute(0, 2, 1, 3, 4)


def jpeg_reencode(x: torch.Tensor, quality: int = 90) -> torch.Tensor:
    """Re-encode each image as JPEG at ``quality`` with the defenses room's ``jpeg`` defense.

    Args:
        x: (N, C, H, W) float images in [0, 1], C = 1 or 3.
        quality: the JPEG quality, an integer from 1 to 95. Default 90.

    Returns:
        (N, C, H, W), same dtype and device, on the 8-bit grid.
    """
    from medrobust.defenses.registry import build_defense

    check_image_batch(x, "benign change jpeg_reencode")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    with torch.no_grad():
        return build_defense(f"jpeg:quality={int(quality)}")(x)


def rewindow_parameters(n: int, generator: torch.Generator,
                        max_change: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image window ``(L', W')`` drawn as in the module docstring.

    Args:
        n: the number of images.
        generator: the random stream (any device: the draws are made there).
        max_change: the largest relative change of level and width, in [0, 1). Default 0.05.

    Returns:
        ``(level', width')``, two (n,) float64 tensors on the generator's device.
    """
    if not 0.0 <= max_change < 1.0:
        raise ValueError(f"max_change must be a fraction in [0, 1), got {max_change}")
    ab = (torch.rand(2, n, generator=generator, device=generator.device, dtype=torch.float64) * 2.0 - 1.0) * max_change
    return WINDOW_LEVEL * (1.0 + ab[0]), WINDOW_WIDTH * (1.0 + ab[1])


def rewindow(x: torch.Tensor, generator: torch.Generator, max_change: float = 0.05) -> torch.Tensor:
    """``clip((x - L') / W' * W + L, 0, 1)`` with a per-image window drawn up to ``max_change``.

    Args:
        x: (N, C, H, W) float images in [0, 1].
        generator: the random stream of the windows.
        max_change: the largest relative change of level and width, in [0, 1). Default 0.05.

    Returns:
        (N, C, H, W), same dtype and device, in [0, 1].
    """
    check_image_batch(x, "benign change rewindow")
    level, width = rewindow_parameters(len(x), generator, max_change)
    level = level.to(device=x.device, dtype=x.dtype).view(_per_image(x))
    width = width.to(device=x.device, dtype=x.dtype).view(_per_image(x))
    return ((x - level) / width * WINDOW_WIDTH + WINDOW_LEVEL).clamp(0.0, 1.0)


def resize_round_trip(x: torch.Tensor, factor: float = 0.9) -> torch.Tensor:
    """Down to ``round(factor * size)`` (bilinear, anti-aliased) and back up (bilinear).

    Args:
        x: (N, C, H, W) float images in [0, 1]; volumes (N, C, D, H, W) are resized slice by
            slice (in-plane).
        factor: the intermediate size as a fraction of the original, in (0, 1]. Default 0.9.

    Returns:
        (N, C, H, W), same dtype and device, in [0, 1].
    """
    check_image_batch(x, "benign change resize_round_trip")
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"resize factor must be in (0, 1], got {factor}")
    slices, shape = _in_plane(x)  # volumes: each slice, in-plane
    h, w = slices.shape[-2:]
    small = (max(1, round(factor * h)), max(1, round(factor * w)))
    down = F.interpolate(slices, size=small, mode="bilinear", align_corners=False, antialias=True)
    return _from_plane(F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False), shape).clamp(0.0, 1.0)


def gaussian_noise(x: torch.Tensor, generator: torch.Generator, sigma: float = 1.0 / 255.0) -> torch.Tensor:
    """``clip(x + N(0, sigma^2), 0, 1)`` per pixel.

    Args:
        x: (N, C, H, W) float images in [0, 1].
        generator: the random stream of the noise (drawn on its device, in float32).
        sigma: the standard deviation in [0, 1] image units, >= 0. Default 1/255 (one grey level).

    Returns:
        (N, C, H, W), same dtype and device, in [0, 1].
    """
    check_image_batch(x, "benign change gaussian_noise")
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
    noise = noise.to(device=x.device, dtype=x.dtype)
    return (x + sigma * noise).clamp(0.0, 1.0)


def window_shift(x: torch.Tensor, generator: torch.Generator, max_shift_hu: float = CT_LEVEL_SHIFT_HU,
                 grid: StoredGrid = CT_HU) -> torch.Tensor:
    """``round(x + s / levels)`` with ``s ~ Uniform(-max_shift_hu, max_shift_hu)`` stored units per
    image (CT: HU), rounded to ``grid``: a recalibration of the HU scale.

    Args:
        x: (N, C, H, W) or (N, C, D, H, W) float in [0, 1] on ``grid``.
        generator: the random stream of the shifts (drawn on its device, float64).
        max_shift_hu: the largest shift in stored units, >= 0. Default 5 HU.
        grid: the stored grid. Default :data:`~medrobust.data.stored_grid.CT_HU`.

    Returns:
        ``x``'s shape, dtype and device, in [0, 1], on ``grid``.
    """
    check_image_batch(x, "benign change window_shift")
    if not max_shift_hu >= 0:
        raise ValueError(f"window shift must be >= 0 {grid.unit}, got {max_shift_hu}")
    shift = (torch.rand(len(x), generator=generator, device=generator.device, dtype=torch.float64) * 2 - 1) * max_shift_hu
    shift = grid.eps_from_units(1.0) * shift.to(device=x.device, dtype=x.dtype).view(_per_image(x))
    return grid.round((x + shift).clamp(0.0, 1.0))


def slice_shift(x: torch.Tensor) -> torch.Tensor:
    """Volumes (N, C, D, H, W) moved one slice along depth: ``x'[d] = x[d + 1]``, the last slice
    repeated (a scan that starts one slice later). Refuses images (no depth)."""
    check_image_batch(x, "benign change slice_shift")
    if not is_volume_batch(x):
        raise ValueError(f"slice_shift moves volumes (N, C, D, H, W) along depth, got images of shape {tuple(x.shape)}")
    if x.shape[2] < 2:
        return x.clone()
    return torch.cat([x[:, :, 1:], x[:, :, -1:]], dim=2)


def benign_changes(x: torch.Tensor, generator: torch.Generator | int = 0,
                   grid: StoredGrid | None = None) -> dict[str, torch.Tensor]:
    """The benign changes of ``x`` for its grid (module docstring), keyed by
    :func:`benign_change_names` (``grid``, whether ``x`` holds volumes).

    Args:
        x: the images, float in [0, 1]; one or three channels (JPEG).
        generator: a ``torch.Generator`` (any device) or a seed for a CPU generator; rewindow
            draws first, then noise (CT: the shifts, then the noise). Default 0.
        grid: the data's stored grid: None (the default) or the 8-bit grid for radiographs (the
            four changes of :data:`BENIGN_CHANGES`, numbers unchanged), :data:`~medrobust.data.
            stored_grid.CT_HU` for CT (:data:`CT_BENIGN_CHANGES`).

    Returns:
        ``{"jpeg90", "rewindow", "resize", "noise"}`` (CT: ``{"window_shift", "recon_noise",
        "slice_shift", "resample"}``, ``slice_shift`` for volumes only) -> changed images, each
        of ``x``'s shape, dtype and device, in [0, 1], detached.

    Shape:
        - x: (N, C, H, W) float in [0, 1], or volumes (N, C, D, H, W).
        - Output: one tensor of ``x``'s shape per change.

    Example:

    >>> import torch
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> changed = benign_changes(x, generator=0)
    >>> list(changed), changed["noise"].shape
    (['jpeg90', 'rewindow', 'resize', 'noise'], torch.Size([2, 1, 32, 32]))
    >>> torch.equal(changed["noise"], benign_changes(x, generator=0)["noise"])  # seeded
    True
    """
    check_image_batch(x, "benign_changes")
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    x = x.detach()
    names = benign_change_names(grid, is_volume_batch(x))
    if names == BENIGN_CHANGES:  # radiographs: exactly as before volumes and CT existed
        out = {
            "jpeg90": jpeg_reencode(x, 90),
            "rewindow": rewindow(x, generator),
            "resize": resize_round_trip(x),
            "noise": gaussian_noise(x, generator),
        }
    elif grid is not None and grid.unit == CT_HU.unit:
        out = {"window_shift": window_shift(x, generator, grid=grid),
               "recon_noise": grid.round(gaussian_noise(x, generator, sigma=grid.eps_from_units(CT_NOISE_HU)))}
        if is_volume_batch(x):
            out["slice_shift"] = slice_shift(x)
        out["resample"] = grid.round(resize_round_trip(x))
    else:  # volumes on the 8-bit grid
        out = {"rewindow": rewindow(x, generator), "resize": resize_round_trip(x),
               "noise": gaussian_noise(x, generator), "slice_shift": slice_shift(x)}
    log.debug("benign changes: %s on %d images", ", ".join(out), len(x))
    return out
