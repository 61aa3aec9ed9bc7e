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
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from medrobust.data.image_batch import check_image_batch

log = logging.getLogger(__name__)

BENIGN_CHANGES = ("jpeg90", "rewindow", "resize", "noise")
"""The benign changes :func:`benign_changes` makes, in order."""

WINDOW_LEVEL = 0.5
WINDOW_WIDTH = 1.0


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
    level = level.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
    width = width.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
    return ((x - level) / width * WINDOW_WIDTH + WINDOW_LEVEL).clamp(0.0, 1.0)


def resize_round_trip(x: torch.Tensor, factor: float = 0.9) -> torch.Tensor:
    """Down to ``round(factor * size)`` (bilinear, anti-aliased) and back up (bilinear).

    Args:
        x: (N, C, H, W) float images in [0, 1].
        factor: the intermediate size as a fraction of the original, in (0, 1]. Default 0.9.

    Returns:
        (N, C, H, W), same dtype and device, in [0, 1].
    """
    check_image_batch(x, "benign change resize_round_trip")
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"resize factor must be in (0, 1], got {factor}")
    h, w = x.shape[-2:]
    small = (max(1, round(factor * h)), max(1, round(factor * w)))
    down = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)


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


def benign_changes(x: torch.Tensor, generator: torch.Generator | int = 0) -> dict[str, torch.Tensor]:
    """The four benign changes of ``x`` (module docstring), keyed by :data:`BENIGN_CHANGES`.

    Args:
        x: the images, float in [0, 1]; one or three channels (JPEG).
        generator: a ``torch.Generator`` (any device) or a seed for a CPU generator; rewindow
            draws first, then noise. Default 0.

    Returns:
        ``{"jpeg90", "rewindow", "resize", "noise"}`` -> changed images, each of ``x``'s shape,
        dtype and device, in [0, 1], detached.

    Shape:
        - x: (N, C, H, W) float in [0, 1].
        - Output: four (N, C, H, W) tensors.

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
    out = {
        "jpeg90": jpeg_reencode(x, 90),
        "rewindow": rewindow(x, generator),
        "resize": resize_round_trip(x),
        "noise": gaussian_noise(x, generator),
    }
    log.debug("benign changes: %s on %d images", ", ".join(out), len(x))
    return out
