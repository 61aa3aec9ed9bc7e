"""How different two stacks of images are: L-infinity, L2, mean absolute difference, SSIM
and PSNR per image — the size and visibility of a perturbation, and the study's detector's
measures. It sits in the data room because it is a function of images alone, so attacks,
detectors and evaluation can all use it without an upward import.

Pure functions of numpy arrays of images in [0, 1], shape (N, H, W) or (N, C, H, W); colour
images are compared as their channel mean (a grey image). Volumes (N, C, D, H, W) are measured
over all their voxels; their SSIM is the mean of the per-slice SSIMs (:func:`ssim`).

SSIM (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004) is the study's detector measure, on the
grey image, as scikit-image computes it (``structural_similarity``: 7 x 7 uniform window,
``data_range = 1``, K1 = 0.01, K2 = 0.03, sample covariances)::

    SSIM(x, y) = mean over windows of  (2 mu_x mu_y + C1)(2 sigma_xy + C2)
                                       / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = 1.

:func:`ssim` is the one SSIM of medrobust: the reference detector, the attack metrics and the
block-shuffle attack's report all call it.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def _as_stack(images: np.ndarray) -> np.ndarray:
    """(N, H, W) grey images, or (N, D, H, W) grey volumes from (N, C, D, H, W)."""
    a = np.asarray(images, dtype=np.float64)
    if a.ndim == 5:  # volumes (N, C, D, H, W): grey volumes (N, D, H, W)
        return a.mean(axis=1) if a.shape[1] != 1 else a[:, 0]
    if a.ndim == 4:
        if a.shape[1] != 1:
            a = a.mean(axis=1)  # colour: compare luminance-like averages
        else:
            a = a[:, 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected images (N, H, W) or (N, C, H, W) or volumes (N, C, D, H, W), got shape "
                         f"{np.shape(images)}")
    return a


def linf_distance(original: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """The L-infinity distance of each pair.

    Args:
        original: (N, H, W) or (N, C, H, W) images in [0, 1] (one (H, W) image: N = 1).
        perturbed: the same shape.

    Returns:
        (N,) float64 ``max |x' - x|`` per image, in [0, 1] units (colour: of the channel means).
    """
    d = _as_stack(perturbed) - _as_stack(original)
    return np.abs(d).reshape(len(d), -1).max(axis=1)


def l2_distance(original: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """The Euclidean distance of each pair.

    Args:
        original: (N, H, W) or (N, C, H, W) images in [0, 1].
        perturbed: the same shape.

    Returns:
        (N,) float64 ``||x' - x||_2`` per image, in [0, 1] units (colour: of the channel means).
    """
    d = _as_stack(perturbed) - _as_stack(original)
    return np.sqrt((d.reshape(len(d), -1) ** 2).sum(axis=1))


def mean_abs_difference(original: np.ndarray, perturbed: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """The mean absolute difference of each pair, on a 0..``scale`` scale.

    Args:
        original: (N, H, W) or (N, C, H, W) images in [0, 1].
        perturbed: the same shape.
        scale: the value of 1.0. Default 255.0 (grey levels; the study's detector uses 0..255).

    Returns:
        (N,) float64 ``mean |x' - x| * scale`` per image.
    """
    d = _as_stack(perturbed) - _as_stack(original)
    return np.abs(d).reshape(len(d), -1).mean(axis=1) * scale


def ssim(original: np.ndarray, perturbed: np.ndarray, colour: str = "grey") -> np.ndarray:
    """(N,) structural similarity per image (1 = identical), float64.

    ``colour="grey"`` (the study's): colour images are compared as their channel mean.
    ``colour="channels"``: images (N, C, H, W) are compared channel by channel and the
    per-channel SSIMs averaged (scikit-image's ``channel_axis``). The 7 x 7 window shrinks to
    the largest odd size that fits images smaller than 7 pixels; images under 3 x 3 are refused.

    Volumes (N, C, D, H, W) (grey only): the mean over slices of each slice's SSIM (its channel
    mean), not a 3-D SSIM. Why: CT slices are often 5-10 times thicker than their pixels, so a
    7 x 7 x 7 window would mix 35 mm of depth with 3.5 mm in-plane; a slice is what a reader looks
    at; and the study's threshold (0.85) was set on 2-D images, which per-slice SSIM keeps.

    Args:
        original: (N, H, W) or (N, C, H, W) images in [0, 1] (``"channels"``: (N, C, H, W)), or
            volumes (N, C, D, H, W) (``"grey"`` only).
        perturbed: the same shape.
        colour: ``"grey"`` or ``"channels"``. Default ``"grey"``.

    Returns:
        (N,) float64 SSIM per image, at most 1.

    Raises:
        ValueError: an unknown ``colour``, different shapes, or images under 3 x 3.

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((2, 16, 16))
    >>> ssim(x, x).tolist(), bool(ssim(x, np.clip(x + 0.2, 0, 1))[0] < 1)
    ([1.0, 1.0], True)
    """
    if colour not in ("grey", "channels"):
        raise ValueError(f"colour must be 'grey' or 'channels', got {colour!r}")
    if colour == "grey":
        a, b = _as_stack(original), _as_stack(perturbed)
        if a.ndim == 4 and a.shape == b.shape:  # volumes (N, D, H, W): the mean of the slices' SSIMs
            n, depth = a.shape[:2]
            return ssim(a.reshape(n * depth, *a.shape[2:]), b.reshape(n * depth, *b.shape[2:])).reshape(n, depth).mean(1)
    else:
        a, b = np.asarray(original, dtype=np.float64), np.asarray(perturbed, dtype=np.float64)
        if a.ndim != 4:
            raise ValueError(f"SSIM per channel needs images (N, C, H, W), got shape {a.shape}")
    if a.shape != b.shape:
        raise ValueError(f"image stacks differ in shape: {a.shape} vs {b.shape}")
    side = min(a.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        raise ValueError(f"SSIM needs images of at least 3 x 3 pixels, got {a.shape[-2:]}")
    if colour == "grey" or a.shape[1] == 1:
        pairs = zip(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]))
        return np.array([structural_similarity(x, y, data_range=1.0, win_size=win) for x, y in pairs], dtype=np.float64)
    return np.array([structural_similarity(x, y, data_range=1.0, win_size=win, channel_axis=0) for x, y in zip(a, b)],
                    dtype=np.float64)


def psnr(original: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """The peak signal-to-noise ratio of each pair, ``10 log10(1 / MSE)`` (peak 1).

    Args:
        original: (N, H, W) or (N, C, H, W) images in [0, 1].
        perturbed: the same shape.

    Returns:
        (N,) float64 PSNR in dB; infinite for identical images.
    """
    d = _as_stack(perturbed) - _as_stack(original)
    mse = (d.reshape(len(d), -1) ** 2).mean(axis=1)
    with np.errstate(divide="ignore"):
        return np.where(mse > 0, 10.0 * np.log10(1.0 / np.maximum(mse, 1e-300)), np.inf)
