"""One CT volume in Hounsfield units with its geometry: what the CT readers return and the writers take.

The voxels are ``hu`` (D, H, W): slices along the patient's axis, rows, columns, as a DICOM
series stores them. The geometry is one 4 x 4 matrix, ``affine_lps``, mapping a voxel index
``(column i, row j, slice k, 1)`` to millimetres in DICOM's patient frame (LPS: +x to the
patient's left, +y posterior, +z head-wards), so a series and a NIfTI file of one volume hold
the same array (:mod:`medrobust.data.nifti` converts to and from NIfTI's RAS).
:meth:`CTVolume.image` gives the currency: [0, 1] on :data:`~medrobust.data.stored_grid.CT_HU`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medrobust.data.stored_grid import CT_HU, StoredGrid

log = logging.getLogger(__name__)

MAX_VOXELS = 200_000_000
"""Largest volume read (D x H x W): a 512 x 512 x 700 CT fits, a decompression bomb does not."""


def axial_affine(spacing: tuple[float, float, float], origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """The LPS affine of an axial volume: columns along +x, rows along +y, slices along +z.

    Args:
        spacing: (slice, row, column) spacing in mm, i.e. (dz, dy, dx).
        origin: the first voxel's centre in mm (x, y, z).
    """
    dz, dy, dx = (float(s) for s in spacing)
    affine = np.diag([dx, dy, dz, 1.0])
    affine[:3, 3] = origin
    return affine


@dataclass
class CTVolume:
    """A CT volume in HU (D, H, W) and where its voxels lie.

    Args:
        hu: (D, H, W) Hounsfield units (float32 or an integer type).
        affine_lps: 4 x 4, voxel index (i column, j row, k slice) -> LPS millimetres.
        source: what a writer keeps from the file read (study and frame-of-reference UIDs,
            patient, a NIfTI header). Default: empty.

    Example:

    >>> v = CTVolume(np.full((2, 3, 4), 40.0), axial_affine((5.0, 0.5, 0.5)))
    >>> v.shape, v.spacing, round(float(v.image()[0, 0, 0]) * 4095 - 1024, 3)  # float32 currency
    ((2, 3, 4), (5.0, 0.5, 0.5), 40.0)
    """

    hu: np.ndarray
    affine_lps: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(D, H, W)."""
        return tuple(int(n) for n in self.hu.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(dz, dy, dx) in mm: the lengths of the slice, row and column steps."""
        norms = np.linalg.norm(self.affine_lps[:3, :3], axis=0)
        return round(float(norms[2]), 6), round(float(norms[1]), 6), round(float(norms[0]), 6)

    def image(self, grid: StoredGrid = CT_HU, where: str = "the volume") -> np.ndarray:
        """The currency: (D, H, W) float32 in [0, 1] on ``grid``; HU outside the grid are clipped
        and their count logged (naming ``where``)."""
        clipped, outside = grid.clip_units(np.asarray(self.hu, dtype=np.float64))
        if outside:
            log.info("%s: %d voxel(s) outside %d..%d %s clipped to the %s grid", where, outside, grid.low, grid.high,
                     grid.unit, grid.name)
        return grid.from_units(clipped).astype(np.float32)


def check_volume_size(shape: tuple[int, ...], where: str, limit: int = MAX_VOXELS) -> None:
    """Refuse a volume of more than ``limit`` voxels (or an empty one), before its voxels are read."""
    from medrobust.data.errors import ImageReadError

    voxels = int(np.prod(shape))
    if voxels < 1:
        raise ImageReadError(where, f"declares an empty volume of shape {tuple(shape)}", "re-export the volume")
    if voxels > limit:
        raise ImageReadError(where, f"volume is {' x '.join(map(str, shape))} = {voxels:,} voxels, over the limit of "
                             f"{limit:,}", "crop or downsample it")
