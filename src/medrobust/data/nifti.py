"""NIfTI volumes (``.nii``, ``.nii.gz``) in HU, read and written with nibabel (the ``ct`` extra).

Reading (:func:`read_nifti`): the values are taken as HU (a CT volume; ``scl_slope``/``scl_inter``
applied by nibabel), the orientation brought to the closest canonical one
(``nibabel.as_closest_canonical``, RAS+) and then to the order a DICOM series has
(:mod:`medrobust.data.ct_volume`: columns towards the patient's left, rows posterior, slices
head-wards), so one volume stored as NIfTI and as a series reads as the same array. The spacing
comes from the header's affine. HU outside the CT grid are clipped and counted.

Writing (:func:`write_nifti`): the volume rounded to integer HU (the stored grid) as int16,
with the volume's affine (RAS, as NIfTI stores it) and, when it was read from a NIfTI file, that
file's header.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.data.ct_volume import MAX_VOXELS, CTVolume, check_volume_size
from medrobust.data.errors import ImageReadError
from medrobust.data.stored_grid import CT_HU
from medrobust.files.atomic_files import atomic_write_bytes

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
"""File names that are NIfTI volumes (case-insensitive)."""
_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM's patient frame <-> NIfTI's (an involution)


def is_nifti_name(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s name ends in ``.nii`` or ``.nii.gz`` (any case)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _nibabel() -> Any:
    try:
        import nibabel
    except ImportError as err:  # an optional extra
        raise ImportError("reading and writing NIfTI needs nibabel: pip install 'medrobust[ct]'") from err
    return nibabel


def read_nifti(path: str | os.PathLike[str], *, max_voxels: int = MAX_VOXELS) -> CTVolume:
    """The CT volume of a NIfTI file, in the order a DICOM series has (module docstring).

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        max_voxels: the largest volume read, checked from the header before the data is read.

    Returns:
        A :class:`~medrobust.data.ct_volume.CTVolume` (``source["nifti_header"]`` keeps the header).

    Raises:
        ImageReadError: not a NIfTI file, truncated, not 3-D, too large or with values that are not finite.
    """
    nib = _nibabel()
    path = Path(path)
    try:
        image = nib.load(path)
    except FileNotFoundError as err:
        raise ImageReadError(path, "file does not exist", "check the path") from err
    except Exception as err:  # nibabel raises ImageFileError, EOFError, ValueError... for broken files
        raise ImageReadError(path, f"cannot be read as NIfTI ({type(err).__name__}: {err})",
                             "re-export it as .nii or .nii.gz") from err
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ImageReadError(path, f"is not one 3-D volume (shape {shape})", "export one volume per file")
    check_volume_size(shape, str(path), max_voxels)
    try:
        canonical = nib.as_closest_canonical(nib.squeeze_image(image))
        data = np.asarray(canonical.get_fdata(dtype=np.float64))
    except Exception as err:  # a truncated file fails here, when the data is read
        raise ImageReadError(path, f"voxel data cannot be read ({type(err).__name__}: {err})",
                             "the file may be truncated; copy or export it again") from err
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ImageReadError(path, f"has {bad} voxel(s) that are not finite numbers", "re-export the volume")
    nx, ny, _ = data.shape
    flip = np.eye(4)
    flip[0, 0], flip[0, 3], flip[1, 1], flip[1, 3] = -1.0, nx - 1, -1.0, ny - 1  # i -> nx-1-i, j -> ny-1-j
    affine_lps = _LPS_RAS @ canonical.affine @ flip
    hu = data[::-1, ::-1, :].transpose(2, 1, 0)  # (x, y, z) RAS -> (slice, row, column) as a series stores it
    clipped, outside = CT_HU.clip_units(hu)
    if outside:
        log.info("%s: %d voxel(s) outside %d..%d HU clipped to the CT grid", path, outside, CT_HU.low, CT_HU.high)
    return CTVolume(np.ascontiguousarray(clipped, dtype=np.float32), affine_lps, {"nifti_header": image.header.copy()})


def write_nifti(path: str | os.PathLike[str], volume: CTVolume) -> Path:
    """Write ``volume`` as NIfTI-1 (``.nii`` or ``.nii.gz`` by the name), int16 integer HU, atomically.

    HU are rounded and clipped to the CT grid; the affine is the volume's (converted to RAS); a
    NIfTI header read with the volume is kept (its data type and scaling set for int16 HU).
    """
    nib = _nibabel()
    path = Path(path)
    if not is_nifti_name(path):
        raise ValueError(f"{path}: a NIfTI file's name ends in .nii or .nii.gz")
    hu = np.rint(np.clip(np.asarray(volume.hu, dtype=np.float64), CT_HU.low, CT_HU.high)).astype(np.int16)
    affine_ras = _LPS_RAS @ np.asarray(volume.affine_lps, dtype=np.float64)
    header = volume.source.get("nifti_header")
    image = nib.Nifti1Image(hu.transpose(2, 1, 0), affine_ras, header=header.copy() if header is not None else None)
    image.set_data_dtype(np.int16)
    image.header.set_slope_inter(1.0, 0.0)
    image.header.set_xyzt_units("mm")
    atomic_write_bytes(path, image.to_bytes() if not path.name.lower().endswith(".gz") else _gzipped(image))
    return path


def _gzipped(image: Any) -> bytes:
    import gzip

    return gzip.compress(image.to_bytes(), mtime=0)  # mtime 0: the same volume gives the same file
