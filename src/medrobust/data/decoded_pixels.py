"""What every image reader does with the pixels it decoded, whatever the format: the size limit it
reads under, the refusal of an image of one flat value, and the rounding of [0, 1] pixels to a
stored bit depth. The readers (:mod:`medrobust.data.io`, :mod:`medrobust.data.dicom`) import it;
it imports neither."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from medrobust.data.errors import ImageReadError

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image (width x height) read by default: a 7000 x 7000 radiograph fits, a
decompression bomb does not."""


def quantize(image: Any, bits: int) -> np.ndarray:
    """Round an (H, W) or (1, H, W) image in [0, 1] to unsigned integers of ``bits`` bits.

    Returns uint8 for ``bits <= 8`` and uint16 otherwise, with values in ``0 .. 2**bits - 1``.
    Values a rounding error outside [0, 1] are clipped; anything further out, or NaN, is a
    caller bug and raises ValueError.
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be between 1 and 16, got {bits}")
    array = _as_2d_float(image)
    levels = (1 << bits) - 1
    scaled = np.rint(np.clip(array, 0.0, 1.0) * levels)
    return scaled.astype(np.uint8 if bits <= 8 else np.uint16)


def _as_2d_float(image: Any) -> np.ndarray:
    """Return ``image`` (numpy or torch, (H, W) or (1, H, W)) as a float64 (H, W) array, checked."""
    if hasattr(image, "detach"):  # a torch tensor; no torch import needed for the check
        image = image.detach().cpu().numpy()
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected an image of shape (H, W) or (1, H, W), got {array.shape}")
    if array.size and not np.all(np.isfinite(array)):
        raise ValueError("image contains NaN or infinite values")
    if array.size and (array.min() < -1e-6 or array.max() > 1 + 1e-6):
        raise ValueError(f"image values must lie in [0, 1], got [{array.min():.4g}, {array.max():.4g}]")
    return array


def check_not_flat(image: np.ndarray, path: str | os.PathLike[str], cause: str | None = None) -> None:
    """Refuse an image whose pixels all hold one value (a 1 x 1 image aside): it carries nothing
    to classify, yet a model would answer on it as confidently as on a radiograph. Such images
    come from a broken header (a DICOM Rescale Slope of 0, an intercept that swamps the stored
    values, a window far outside them) or a broken file (a JPEG whose quantisation tables are all
    zero decodes to one grey). ``cause``: the header value that flattened it, when the decoder
    knows it; else the message gives the value every pixel holds."""
    if image.size <= 1:
        return
    low, high = float(image.min()), float(image.max())
    if low != high or not np.isfinite(low):
        return
    what = cause or f"every pixel is {low:.4g} (grey level {round(low * 255)} of 255)"
    raise ImageReadError(
        path,
        f"is degenerate: {what}, so the image has no variation at all",
        "correct the header or re-export the image; a blank image cannot be classified",
    )
