"""Write head-CT phantoms to disk as a class-per-folder tree of DICOM series and/or NIfTI files,
plus ``manifest.csv`` (each volume's class, split, seed, geometry, measured noise and every
generator parameter).

Layouts (one class-per-folder root per format; with both formats, ``dicom/`` and ``nifti/``
side by side, so no reader sees one volume twice)::

    OUT/<class>/<id>/slice-0001.dcm ...     --volumes, dicom: one series folder per volume
    OUT/<class>/<id>.dcm                    --slices, dicom: one CT slice (a 2D image in HU)
    OUT/<class>/<id>.nii.gz                 nifti (a slice is a volume of one slice)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from medrobust.data.ct_volume import CTVolume, axial_affine
from medrobust.data.phantom.ct_head import CT_CLASSES, ct_head_params, ct_head_spacing, measured_noise, render_ct_head
from medrobust.data.phantom.export import write_manifest
from medrobust.data.splits import stratified_split

CT_FORMATS = ("dicom", "nifti", "both")
MANIFEST_FIRST_COLUMNS = ["path", "label", "split", "id", "seed", "size", "depth", "spacing_mm", "noise_hu_measured"]


def write_ct_phantom_dataset(out: str | Path, per_class: int, size: int = 64, depth: int = 16, fmt: str = "dicom",
                             seed: int = 0, progress: Callable[[int], None] | None = None) -> Path:
    """Render ``per_class`` heads of each class (normal, haemorrhage, infarct) and write them.

    Args:
        out: the folder to write.
        per_class: heads per class, at least 1.
        size: the in-plane matrix (pixels). Default 64.
        depth: slices per volume; 1 writes axial slices (single DICOM files). Default 16.
        fmt: ``dicom``, ``nifti`` or ``both``. Default ``dicom``.
        seed: the generator's seed; the same seed gives the same HU. Default 0.
        progress: called with the number of heads done so far.

    Returns:
        The path of ``manifest.csv``. The manifest's ``noise_hu_measured`` is the standard deviation
        of the HU in a homogeneous region (the white matter, away from any finding) of each head,
        ``noise_hu`` the generator's setting.

    Raises:
        ValueError: an unknown format or ``per_class`` below 1.
    """
    if fmt not in CT_FORMATS:
        raise ValueError(f"format {fmt!r}: use one of {', '.join(CT_FORMATS)}")
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    out = Path(out)
    formats = ("dicom", "nifti") if fmt == "both" else (fmt,)
    labels = np.arange(per_class * len(CT_CLASSES)) % len(CT_CLASSES)
    splits = stratified_split(labels, (0.6, 0.2, 0.2), seed=42)
    spacing = ct_head_spacing(size, depth)
    rows: list[dict[str, object]] = []
    for i, (label, split) in enumerate(zip(labels, splits)):
        params = ct_head_params(seed, i, int(label))
        hu = render_ct_head(params, size, depth)
        clean = render_ct_head(params, size, depth, noise=False)
        volume = CTVolume(hu, axial_affine(spacing, origin=(-110.0, -110.0, 0.0)))
        name, paths = f"ct-{i:06d}", []
        for form in formats:
            root = out / form if len(formats) > 1 else out
            paths.append(_write(root / params.class_name, name, volume, form, depth).relative_to(out).as_posix())
        rows.append({"path": ";".join(paths), "label": params.class_name, "split": split, "id": name, "seed": seed,
                     "size": size, "depth": depth, "spacing_mm": "x".join(f"{s:g}" for s in spacing),
                     "noise_hu_measured": round(measured_noise(hu, clean, params.white_hu), 3), **params.to_record()})
        if progress is not None:
            progress(i + 1)
    return write_manifest(out, rows, MANIFEST_FIRST_COLUMNS)


def _write(folder: Path, name: str, volume: CTVolume, form: str, depth: int) -> Path:
    if form == "nifti":
        from medrobust.data.nifti import write_nifti

        return write_nifti(folder / f"{name}.nii.gz", volume)
    from medrobust.data.dicom_series import write_dicom_series

    if depth == 1:  # one slice: a single CT file in the class folder, as a radiograph would be
        return write_dicom_series(folder, volume, description="medrobust CT phantom", file_name=f"{name}.dcm")[0]
    write_dicom_series(folder / name, volume, description="medrobust CT phantom")
    return folder / name
