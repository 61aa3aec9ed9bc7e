"""``mr.write_phantoms`` and ``mr.phantom_gallery``: the embedded synthetic chest radiographs
(Normal / Pneumonia / Pneumothorax) as a folder of PNGs, or as one picture of examples; and the
head-CT phantoms (normal / haemorrhage / infarct, in HU) as DICOM series or NIfTI volumes."""

from __future__ import annotations

from pathlib import Path

from medrobust.execution.progress import Progress, SilentProgress


def write_phantoms(out: str | Path, per_class: int = 100, size: int | None = None, seed: int = 0,
                   progress: Progress | None = None, *, modality: str = "xray", depth: int = 16,
                   fmt: str = "dicom") -> Path:
    """Write ``out/<Class>/*.png`` (8-bit grey) and ``out/manifest.csv`` (label, split, the
    generator's parameters); the same seed gives byte-identical images. With ``modality="ct"``:
    head CT in integer HU (normal / haemorrhage / infarct), one DICOM series folder or NIfTI file
    per volume (:mod:`medrobust.data.phantom.ct_export`), the manifest adding each volume's
    geometry and measured noise in HU.

    Args:
        out: the folder to write (a class-per-folder tree :func:`mr.open_images` reads).
        per_class: phantoms per class. Default 100.
        size: the side of each image in pixels. Default None: 128 (X-ray), 64 (CT).
        seed: the generator's seed. Default 0.
        progress: reports the stage ``phantoms``. Default None: silent.
        modality: ``xray`` (chest radiographs) or ``ct`` (head CT). Default ``xray``.
        depth: CT only: slices per volume; 1 writes axial slices. Default 16.
        fmt: CT only: ``dicom``, ``nifti`` or ``both``. Default ``dicom``.

    Returns:
        The path of ``manifest.csv``.

    Raises:
        ValueError: an unknown modality or CT format.
    """
    if modality not in ("xray", "ct"):
        raise ValueError(f"modality {modality!r}: use xray (chest radiographs) or ct (head CT in HU)")
    with (progress or SilentProgress()).stage("phantoms", 3 * per_class) as bar:
        done = [0]

        def advance(n: int) -> None:
            bar.advance(n - done[0])
            done[0] = n

        if modality == "ct":
            from medrobust.data.phantom.ct_export import write_ct_phantom_dataset

            return write_ct_phantom_dataset(Path(out), per_class, size or 64, depth, fmt, seed, progress=advance)
        from medrobust.data.phantom.export import write_phantom_dataset

        return write_phantom_dataset(Path(out), per_class, size or 128, seed, progress=advance)


def phantom_gallery(per_class: int = 6, size: int = 192, seed: int = 0):
    """One picture of example phantoms, a row per class, each row labelled on the left.

    Args:
        per_class: phantoms per row. Default 6.
        size: the side of each phantom in pixels. Default 192.
        seed: the generator's seed. Default 0.

    Returns:
        A grey PIL image.
    """
    from medrobust.data.phantom.export import phantom_gallery as gallery

    return gallery(per_class, size, seed)
