"""The data's image noise in a homogeneous region, in the units a budget is stated in (HU for CT).

A budget means little without a yardstick: "the attacker changes each voxel by at most 4 HU" reads
very differently beside "the image noise is 6 HU" (the perturbation hides in the noise) than beside
0.5 HU. A physicist measures noise as the standard deviation in a region of interest of uniform
tissue; medrobust does the same two ways:

* **the phantoms' own figure**: a folder written by ``medrobust data phantom --modality ct`` has a
  ``manifest.csv`` whose ``noise_hu_measured`` is each head's standard deviation in its white
  matter (the noiseless head tells where it is); the median over the heads is the data's noise
  (:func:`manifest_noise_std`); phantoms generated in the run (``data: {source: phantom,
  modality: ct}``) are measured the same way as they are generated
  (:meth:`~medrobust.data.phantom.ct_dataset.CTPhantomDataset.known_noise_std`);
* **an estimate for any other data** (:func:`estimate_noise_std`): the median absolute deviation
  (MAD) of a high-pass residual (each voxel minus the mean of its 3 x 3 in-plane neighbourhood),
  over soft tissue away from edges (a 3 x 3 median filter of the voxel lies in -100..150 HU, and so
  does every voxel within 2 pixels). For white noise of standard deviation s the residual has
  standard deviation ``s sqrt(8/9)``, and ``1.4826 MAD`` estimates a Gaussian's standard
  deviation robustly (edges and lesions are outliers it ignores). Correlated noise (every real
  reconstruction kernel) makes the residual smaller than the noise, so the estimate is a lower
  bound, and it is labelled an estimate wherever it is shown.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SOFT_TISSUE_HU = (-100.0, 150.0)
"""The HU range whose voxels the estimate measures (brain, muscle, organs, blood; no fat, air or bone)."""
MIN_VOXELS = 200
"""Fewer soft-tissue voxels than this and the noise is not estimated (None)."""
ESTIMATE_METHOD = ("estimate: 1.4826 x the median absolute deviation of a 3 x 3 in-plane high-pass residual in soft "
                   "tissue (-100..150 HU) away from edges, corrected by sqrt(8/9); reads low for correlated noise")
MANIFEST_METHOD = "the phantoms' manifest: median of each head's standard deviation in its white matter"


def estimate_noise_std(hu: np.ndarray) -> float | None:
    """The noise standard deviation of CT images or volumes, estimated (module docstring).

    Args:
        hu: Hounsfield units, (H, W), (N, H, W) or (N, D, H, W): the last two axes are in-plane.

    Returns:
        The estimate in HU, or None when fewer than :data:`MIN_VOXELS` voxels are soft tissue.
    """
    from scipy import ndimage

    values = np.asarray(hu, dtype=np.float64)
    plane = (1,) * (values.ndim - 2) + (3, 3)
    wide = (1,) * (values.ndim - 2) + (5, 5)
    low, high = SOFT_TISSUE_HU
    smooth = ndimage.median_filter(values, size=plane, mode="nearest")
    tissue = (smooth >= low) & (smooth <= high)
    inside = ndimage.minimum_filter(tissue.astype(np.uint8), size=wide, mode="constant", cval=0).astype(bool)
    if int(inside.sum()) < MIN_VOXELS:
        return None
    residual = (values - ndimage.uniform_filter(values, size=plane, mode="nearest"))[inside]
    mad = float(np.median(np.abs(residual - np.median(residual))))
    return 1.4826 * mad / math.sqrt(8.0 / 9.0)


def manifest_noise_std(root: str | Path) -> float | None:
    """The median ``noise_hu_measured`` of a phantom folder's ``manifest.csv`` (also one level up,
    for a ``dicom/`` or ``nifti/`` root), or None when there is no such column."""
    root = Path(root)
    for manifest in (root / "manifest.csv", root.parent / "manifest.csv"):
        if not manifest.is_file():
            continue
        try:
            with manifest.open(newline="", encoding="utf-8") as handle:
                values = [float(row["noise_hu_measured"]) for row in csv.DictReader(handle)
                          if row.get("noise_hu_measured") not in (None, "")]
        except (OSError, ValueError, KeyError, csv.Error) as err:
            log.info("%s: no noise figure read (%s)", manifest, err)
            return None
        values = [v for v in values if math.isfinite(v)]
        return float(np.median(values)) if values else None
    return None
