"""A folder of DICOM slices of one CT series as one volume in HU, and a volume written back as a series.

Reading (:func:`read_dicom_series`): every DICOM file of the folder (any name; hidden files
skipped) is one slice. The slices are sorted by ImagePositionPatient projected on the slice
normal (the cross product of ImageOrientationPatient's row and column directions), or, when a
slice has no position, by InstanceNumber; file names never decide the order. Each slice's stored
values go through RescaleSlope/RescaleIntercept to HU; the spacing is PixelSpacing and the
distance between consecutive positions (SpacingBetweenSlices or SliceThickness without
positions). A folder is refused, with the reason naming it, when it holds slices of several
series (SeriesInstanceUIDs), slices of unequal shape or orientation, two slices at one position,
or a gap (a slice distance more than 10% from the median): a model fed such a stack would see
anatomy that is not there. HU outside the CT grid (-1024..3071) are clipped and counted.

Writing (:func:`write_dicom_series`): an adversarial or synthetic volume, rounded to integer HU
(the stored grid, :data:`~medrobust.data.stored_grid.CT_HU`), as int16 CT Image Storage
slices with RescaleSlope 1 and RescaleIntercept -1024 (stored value = HU + 1024), a new
SeriesInstanceUID and new SOPInstanceUIDs, ImageType DERIVED\\SECONDARY, and the positions,
orientation and spacing of the volume's geometry (kept from the source when it was read from
one, with its study, frame of reference and patient).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid

from medrobust.data.ct_volume import MAX_VOXELS, CTVolume, check_volume_size
from medrobust.data.dicom import _decode_first_frame, _ds_number, _pydicom_remarks, _read_dataset, _rescale, new_dataset
from medrobust.data.errors import ImageReadError
from medrobust.data.io import is_image_file
from medrobust.data.stored_grid import CT_HU
from medrobust.files.atomic_files import open_atomic

log = logging.getLogger(__name__)

GAP_TOLERANCE = 0.10
"""A slice distance more than this fraction from the median distance is a gap (or an overlap)."""
KEPT_FROM_SOURCE = ("StudyInstanceUID", "FrameOfReferenceUID", "PatientName", "PatientID", "PatientBirthDate",
                    "PatientSex", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")
"""What a written series keeps of the series it was read from: it is a derived series of the same study."""
_FIX = "put the slices of one series, complete, in a folder of their own"


def series_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (any name, hidden ones skipped), sorted by name."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and is_image_file(p))


def is_series_folder(folder: Path) -> bool:
    """Whether ``folder`` directly holds DICOM files (a series folder of a class folder)."""
    return folder.is_dir() and bool(series_files(folder))


def read_dicom_series(folder: str | os.PathLike[str], *, max_voxels: int = MAX_VOXELS) -> CTVolume:
    """The CT volume (HU, geometry) of the one series in ``folder`` (rules in the module docstring).

    Args:
        folder: the series' folder.
        max_voxels: the largest D x H x W read, checked from the headers before any pixel is decoded.

    Returns:
        A :class:`~medrobust.data.ct_volume.CTVolume`, slices in patient order.

    Raises:
        ImageReadError: the folder is not one complete series (the reason names the folder and the
            slices at fault), or a slice cannot be read.
    """
    folder = Path(folder)
    files = series_files(folder) if folder.is_dir() else []
    if not files:
        raise ImageReadError(folder, "holds no DICOM slices", "point at a folder of the slices of one series")
    remarks: list[str] = []
    with _pydicom_remarks(remarks), _naming_the_series(folder):
        slices = [(_read_dataset(f), f) for f in files]
    _one_series(folder, slices)
    rows, columns = int(slices[0][0].get("Rows", 0) or 0), int(slices[0][0].get("Columns", 0) or 0)
    check_volume_size((len(slices), rows, columns), str(folder), max_voxels)
    slices, affine = _ordered(folder, slices)
    hu = np.empty((len(slices), rows, columns), dtype=np.float64)
    with _pydicom_remarks(remarks), np.errstate(over="ignore", invalid="ignore"), _naming_the_series(folder):
        for k, (ds, path) in enumerate(slices):
            hu[k] = _slice_hu(ds, path)
    if not np.isfinite(hu).all():
        raise ImageReadError(folder, f"has {int(np.count_nonzero(~np.isfinite(hu)))} voxel(s) that are not finite "
                             "after RescaleSlope/Intercept", "correct the rescale tags and re-export the series")
    clipped, outside = CT_HU.clip_units(hu)
    if outside:
        log.info("%s: %d voxel(s) outside %d..%d HU clipped to the CT grid", folder, outside, CT_HU.low, CT_HU.high)
    first = slices[0][0]
    source = {key: first.get(key) for key in KEPT_FROM_SOURCE if first.get(key) not in (None, "")}
    return CTVolume(clipped.astype(np.float32), affine, source)


@contextmanager
def _naming_the_series(folder: Path) -> Iterator[None]:
    """A slice that cannot be read makes the series unreadable: the error names the series' folder
    (what a dataset skips) and, in its reason, the slice."""
    try:
        yield
    except ImageReadError as err:
        if Path(err.path) == folder:
            raise
        raise ImageReadError(folder, f"slice {Path(err.path).name}: {err.problem}", err.fix) from err


def _slice_hu(ds: Dataset, path: Path) -> np.ndarray:
    pixels = _decode_first_frame(ds, path).astype(np.float64)
    if pixels.ndim != 2:
        raise ImageReadError(path, f"is not a grey slice (pixel array of shape {pixels.shape})", _FIX)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = _rescale(ds, path)
        return pixels * slope + intercept
    return pixels


def _one_series(folder: Path, slices: list[tuple[Dataset, Path]]) -> None:
    """Refuse mixed series, unequal shapes and unequal orientations."""
    uids = sorted({str(ds.get("SeriesInstanceUID", "")) for ds, _ in slices})
    if len(uids) > 1:
        raise ImageReadError(folder, f"holds slices of {len(uids)} series (SeriesInstanceUIDs {', '.join(uids[:3])}"
                             f"{'...' if len(uids) > 3 else ''})", "put each series in a folder of its own")
    shapes = sorted({(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)) for ds, _ in slices})
    if len(shapes) > 1:
        raise ImageReadError(folder, f"holds slices of unequal shapes ({', '.join(f'{r}x{c}' for r, c in shapes)})",
                             _FIX)
    orientations = [_orientation(ds) for ds, _ in slices]
    if any(o is not None for o in orientations):
        if any(o is None for o in orientations) or any(
                not np.allclose(o, orientations[0], atol=1e-4) for o in orientations):  # type: ignore[arg-type]
            raise ImageReadError(folder, "holds slices of unequal orientations (ImageOrientationPatient)", _FIX)


def _orientation(ds: Dataset) -> np.ndarray | None:
    value = ds.get("ImageOrientationPatient")
    return None if value is None or len(value) != 6 else np.array([float(v) for v in value])


def _ordered(folder: Path, slices: list[tuple[Dataset, Path]]) -> tuple[list[tuple[Dataset, Path]], np.ndarray]:
    """The slices in patient order and the volume's LPS affine; duplicates and gaps refused."""
    first = slices[0][0]
    orientation = _orientation(first)
    row_dir, col_dir = (orientation[:3], orientation[3:]) if orientation is not None else (np.eye(3)[0], np.eye(3)[1])
    normal = np.cross(row_dir, col_dir)
    dy, dx = (float(v) for v in first.get("PixelSpacing", (1.0, 1.0)))
    positions = [ds.get("ImagePositionPatient") for ds, _ in slices]
    if all(p is not None and len(p) == 3 for p in positions):
        points = np.array([[float(v) for v in p] for p in positions])
        along = points @ normal
        order = np.argsort(along, kind="stable")
        along, points = along[order], points[order]
    else:
        numbers = [ds.get("InstanceNumber") for ds, _ in slices]
        if any(n is None for n in numbers):
            raise ImageReadError(folder, "has slices with neither ImagePositionPatient nor InstanceNumber, so their "
                                 "order is unknown", "re-export the series with its position tags")
        order = np.argsort([int(n) for n in numbers], kind="stable")
        step = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
        along = np.arange(len(slices)) * step
        points = np.array([along_k * normal for along_k in along])
    ordered = [slices[i] for i in order]
    steps = np.diff(along)
    if len(ordered) > 1:
        same = np.flatnonzero(steps < 1e-3)
        if same.size:
            a, b = ordered[same[0]][1].name, ordered[same[0] + 1][1].name
            raise ImageReadError(folder, f"has two slices at one position ({a} and {b}, {along[same[0]]:.2f} mm along "
                                 "the slice normal)", "remove the duplicate slice")
        median = float(np.median(steps))
        off = np.flatnonzero(np.abs(steps - median) > GAP_TOLERANCE * median)
        if off.size:
            a, b = ordered[off[0]][1].name, ordered[off[0] + 1][1].name
            raise ImageReadError(folder, f"has a gap: {steps[off[0]]:.2f} mm between {a} and {b}, where the median "
                                 f"slice distance is {median:.2f} mm", "add the missing slices, or split the series")
        slice_vec = (points[-1] - points[0]) / (len(ordered) - 1)
    else:
        slice_vec = normal * float(first.get("SliceThickness") or 1.0)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = row_dir * dx, col_dir * dy, slice_vec, points[0]
    return ordered, affine


def write_dicom_series(folder: str | os.PathLike[str], volume: CTVolume, description: str = "medrobust derived",
                       modality: str = "CT", file_name: str = "slice-{:04d}.dcm") -> list[Path]:
    """Write ``volume`` as a DICOM series, one file per slice (``slice-0001.dcm``...), atomically each.

    HU are rounded to integers and clipped to the CT grid (-1024..3071) and stored as int16 with
    RescaleSlope 1 and RescaleIntercept -1024; the series is new (SeriesInstanceUID,
    SOPInstanceUIDs) and marked ImageType DERIVED\\SECONDARY\\AXIAL; positions, orientation and
    spacing come from ``volume.affine_lps``; the study, frame of reference and patient from
    ``volume.source`` when it holds them (else new).

    Args:
        folder: the series' folder (created).
        volume: the volume to write.
        description: SeriesDescription. Default ``"medrobust derived"``.
        modality: Modality. Default ``"CT"``.
        file_name: each slice's file name, formatted with its number from 1. Default
            ``"slice-{:04d}.dcm"`` (a single slice may be given a plain name).

    Returns:
        The files written, in slice order.
    """
    folder = Path(folder)
    hu = np.rint(np.clip(np.asarray(volume.hu, dtype=np.float64), CT_HU.low, CT_HU.high))
    stored = (hu - CT_HU.low).astype("<i2")
    affine = np.asarray(volume.affine_lps, dtype=np.float64)
    dx, dy, dz = (float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    row_dir, col_dir = affine[:3, 0] / dx, affine[:3, 1] / dy
    source = dict(volume.source)
    study = {key: source[key] for key in KEPT_FROM_SOURCE if key in source}
    study.setdefault("StudyInstanceUID", generate_uid())
    study.setdefault("FrameOfReferenceUID", generate_uid())
    series_uid = generate_uid()
    written = []
    for k in range(stored.shape[0]):
        ds = _slice_dataset(stored[k], study, series_uid)
        ds.Modality = modality
        ds.SeriesDescription = description[:64]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds_number(v) for v in affine[:3, 3] + k * affine[:3, 2]]
        ds.ImageOrientationPatient = [_ds_number(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [_ds_number(dy), _ds_number(dx)]
        ds.SliceThickness = _ds_number(dz)
        ds.SpacingBetweenSlices = _ds_number(dz)
        path = folder / file_name.format(k + 1)
        with open_atomic(path) as handle:
            ds.save_as(handle, enforce_file_format=True)
        written.append(path)
    return written


def _slice_dataset(stored: np.ndarray, study: dict[str, Any], series_uid: str) -> Dataset:
    ds = new_dataset(CTImageStorage)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        setattr(ds, keyword, None)  # type 2: present, empty unless the source had them
    for keyword, value in study.items():
        setattr(ds, keyword, value)
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = _ds_number(CT_HU.low)
    ds.RescaleType = "HU"
    ds.KVP = None
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds["PixelData"].VR = "OW"
    return ds
