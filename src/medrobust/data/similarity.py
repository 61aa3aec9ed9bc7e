"""How different two stacks of images are: L-infinity, L2, mean absolute difference, SSIM
and PSNR per image — the size and visibility of a perturbation, and the study's detector's
measures. It sits in the data room because it is a function of images alone, so attacks,
detectors and evaluation can all use it without an upward import.

Pure functions of numpy arrays of images in [0, 1], shape (N, H, W) or (N, 1, H, W).
SSIM is scikit-image's (Wang et al. 2004; 7x7 window, data range 1) on the grey image.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def _as_stack(images: np.ndarray) -> np.ndarray:
    a = np.asarray(images, dtype=np.float64)
    if a.ndim == 4:
        if a.shape[1] != 1:
            a = a.mean(axis=1)  # colour: compare luminance-like averages
        else:
            a = a[:, 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected images (N, H, W) or (N, C, H, W), got shape {np.shape(images)}")
    return a


def linf_distance(original: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """(N,) max |x' - x| per image, in [0, 1] units."""
    d = _as_stack(perturbed) - _as_stack(original)
    return np.abs(d).reshape(len(d), -1).max(axis=1)


def l2_distance(original: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """(N,) Euclidean norm of x' - x per image."""
    d = _as_stack(perturbed) - _as_stack(original)
    return np.sqrt((d.reshape(len(d), -1) ** 2).sum(axis=1))


def mean_abs_difference(original: np.ndarray, perturbed: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """(N,) mean |x' - x| per image on a 0..``scale`` scale (the study's detector uses 0..255)."""
    d = _as_stack(perturbed) - _as_stack(original)
    return np.abs(d).reshape(len(d), -1).mean(axis=1) * scale


def ssim(original: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """(N,) structural similarity per image (1 = identical)."""
    a, b = _as_stack(original), _as_stack(perturbed)
    if a.shape != b.shape:
        raise ValueError(f"image stacks differ in shape: {a.shape} vs {b.shape}")
    win = min(7, a.shape[1], a.shape[2])
    win = win if win % 2 == 1 else win - 1
    return np.array([structural_similarity(x, y, data_range=1.0, win_size=win) for x, y in zip(a, b)])


def psnr(original: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """(N,) peak signal-to-noise ratio in dB, ``10 log10(1 / MSE)``; infinite for identical images."""
    d = _as_stack(perturbed) - _as_stack(original)
    mse = (d.reshape(len(d), -1) ** 2).mean(axis=1)
    with np.errstate(divide="ignore"):
        return np.where(mse > 0, 10.0 * np.log10(1.0 / np.maximum(mse, 1e-300)), np.inf)
