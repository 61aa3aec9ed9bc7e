"""Which entries of a class folder are CT volumes, and reading one as the currency.

A class folder (:mod:`medrobust.data.folders`) may hold, besides single images:

* a **series folder**: a sub-folder that directly holds two or more DICOM files of CT (Modality CT
  or a Rescale Type of HU, read from the header of its first file): one volume, read by
  :func:`~medrobust.data.dicom_series.read_dicom_series` (slices ordered by position, never by
  file name; a mixed series, a gap, a duplicate position or a broken slice makes the reader refuse
  it, and the dataset skips it with that reason);
* a **NIfTI file** (``.nii``, ``.nii.gz``): one volume (:func:`~medrobust.data.nifti.read_nifti`);
* a single **CT slice** (a DICOM file of CT): a 2-D image in HU.

All three are on the CT grid (:data:`~medrobust.data.stored_grid.CT_HU`, ``HU = -1024 + 4095 x``);
:func:`entry_grid` says which grid an entry is on without decoding any pixel.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medrobust.data.ct_volume import MAX_VOXELS
from medrobust.data.nifti import is_nifti_name
from medrobust.data.stored_grid import CT_HU, EIGHT_BIT, StoredGrid

VOLUME_FILES = "DICOM series folders (two or more CT slices), .nii or .nii.gz files"
"""The volumes a class folder may hold, as messages name them."""


def dicom_is_ct(path: str | os.PathLike[str]) -> bool:
    """Whether the DICOM file ``path`` is CT in HU (Modality CT, or a Rescale Type of HU), read from
    its header only; False for a file whose header cannot be read (its reader reports why)."""
    import pydicom

    from medrobust.data.dicom import is_ct

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "RescaleType"])
    except Exception:  # a broken file: the reader says why when the image is read
        return False
    return is_ct(ds)


def is_ct_series_folder(folder: Path, files: list[Path]) -> bool:
    """Whether ``folder``, directly holding the DICOM ``files`` (sorted), is a CT series folder:
    two or more files, the first of which is CT."""
    return len(files) >= 2 and dicom_is_ct(files[0])


def is_volume_entry(path: Path) -> bool:
    """Whether a dataset record's ``path`` is a volume (a series folder or a NIfTI file)."""
    return path.is_dir() or is_nifti_name(path)


def entry_grid(path: Path) -> StoredGrid:
    """The stored grid of one entry: CT for volumes and CT slices, 8-bit for every other image."""
    if is_volume_entry(path):
        return CT_HU
    from medrobust.data.io import is_image_name

    if is_image_name(path) and Path(path).suffix.lower() not in (".dcm", ".dicom"):
        return EIGHT_BIT
    return CT_HU if dicom_is_ct(path) else EIGHT_BIT


def read_volume(path: Path, max_voxels: int = MAX_VOXELS) -> np.ndarray:
    """A volume entry as the currency: (D, H, W) float32 in [0, 1] on the CT grid.

    Raises:
        ImageReadError: the series or file cannot be read as one volume (the reason names it).
    """
    if path.is_dir():
        from medrobust.data.dicom_series import read_dicom_series

        volume = read_dicom_series(path, max_voxels=max_voxels)
    else:
        from medrobust.data.nifti import read_nifti

        volume = read_nifti(path, max_voxels=max_voxels)
    return volume.image(CT_HU, where=str(path))
