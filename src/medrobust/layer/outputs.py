"""Where the commands that write images put each one: at the image's id (its path relative to
the source folder) under the output folder, as a PNG, so ``attack -> defend -> detect
--reference ORIGINALS`` chain on the same relative paths. Writes are atomic, and never leave
the output folder whatever an id holds.

A CT volume is written as what it was read from, in integer HU: a DICOM series folder at the
series' id (int16 slices, a new derived series of the same study, the source's geometry, its
in-plane spacing scaled when the volume was read at another matrix), or a NIfTI file at the
file's id; so the output folder reads back as the same class-per-folder tree of CT.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath


class OutputNames:
    """``out / id`` with a ``.png`` suffix, one distinct file per id: when two ids would share a
    file (``a.jpg`` and ``a.png``), the later keeps its suffix (``a.jpg.png``)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._taken: set[PurePosixPath] = set()

    def relative(self, item_id: str) -> PurePosixPath:
        parts = [p for p in PurePosixPath(item_id.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
        rel = PurePosixPath(*parts) if parts else PurePosixPath("image")
        target = rel.with_suffix(".png")
        if target in self._taken:
            target = rel.with_name(rel.name + ".png")
        n = 1
        while target in self._taken:  # a third name for the same stem: number it
            target = rel.with_name(f"{rel.stem}-{n}.png")
            n += 1
        self._taken.add(target)
        return target

    def path(self, item_id: str) -> Path:
        return self.out / self.relative(item_id)

    def volume(self, item_id: str, keep_suffix: bool) -> PurePosixPath:
        """``out / id`` for a CT volume: a series folder (``keep_suffix`` False: the id's name as
        it is) or a NIfTI file (its ``.nii``/``.nii.gz`` name kept), distinct per id."""
        parts = [p for p in PurePosixPath(item_id.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
        target = PurePosixPath(*parts) if parts else PurePosixPath("volume")
        n = 1
        while target in self._taken:
            stem, dot, rest = target.name.partition(".") if keep_suffix else (target.name, "", "")
            target = target.with_name(f"{stem}-{n}{dot}{rest}")
            n += 1
        self._taken.add(target)
        return target


def write_images(names: OutputNames, ids: list[str], images, sources: Mapping[str, Path] | None = None) -> list[str]:
    """Each image (C, H, W) in [0, 1] as an 8-bit grey PNG at its id, each CT volume (C, D, H, W)
    as its source was stored (module docstring; ``sources``: the file or series folder each id was
    read from); the relative paths written."""
    from medrobust.data.io import write_png

    written = []
    for item_id, image in zip(ids, images):
        if image.ndim == 4:
            written.append(_write_volume(names, item_id, image[0], (sources or {}).get(item_id)))
            continue
        rel = names.relative(item_id)
        write_png(names.out / rel, image[0] if image.ndim == 3 else image)
        written.append(rel.as_posix())
    return written


def _write_volume(names: OutputNames, item_id: str, volume, source: Path | None) -> str:
    """One CT volume (D, H, W) in [0, 1] on the CT grid, written as its source was stored."""
    import numpy as np

    from medrobust.data.ct_volume import CTVolume
    from medrobust.data.dicom_series import read_dicom_series, write_dicom_series
    from medrobust.data.nifti import is_nifti_name, read_nifti, write_nifti
    from medrobust.data.stored_grid import CT_HU

    if source is None or not (source.is_dir() or is_nifti_name(source)):
        raise ValueError(f"{item_id}: a volume is written back as the DICOM series or NIfTI file it was read from, "
                         "and this one was read from neither (e.g. a MedMNIST 3D array); leave out the output folder "
                         "(--out) to keep the volumes in memory")
    hu = np.rint(CT_HU.to_units(np.asarray(volume, dtype=np.float64)))
    read = read_dicom_series(source) if source.is_dir() else read_nifti(source)
    affine = np.array(read.affine_lps, dtype=np.float64)
    for axis, (had, has) in enumerate(zip(read.shape[::-1], hu.shape[::-1])):  # columns, rows, slices
        affine[:3, axis] *= had / has  # read at another matrix: the same extent in more or fewer voxels
    derived = CTVolume(hu, affine, read.source)
    rel = names.volume(item_id, keep_suffix=not source.is_dir())
    if source.is_dir():
        write_dicom_series(names.out / rel, derived, description="medrobust adversarial")
    else:
        write_nifti(names.out / rel, derived)
    return rel.as_posix()
