"""Open any data source from one string, as the CLI and config files name them.

=============================  ==========================================================
``phantom``                    the embedded synthetic radiographs (``phantom:per_class=300``);
                               ``phantom:modality=ct`` head-CT volumes in HU (``depth=16``)
``DIR``                        a class-per-folder tree (``DIR/<Class>/*.png|jpg|dcm``)
``nih:CSV,IMAGES_DIR``         NIH ChestX-ray14 (label table + image folders)
``medmnist:FILE.npz``          a MedMNIST 2-D set (a bare ``FILE.npz`` works too)
=============================  ==========================================================

Every source comes back as an :class:`~medrobust.data.dataset.ImageDataset` whose records
carry a train/val/test split (60/20/20, seed 42 by default; patient-grouped for NIH).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medrobust.data.dataset import ImageDataset
from medrobust.data.errors import DataSourceError

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
PHANTOM_MODALITIES = ("cxr", "ct")
"""The embedded phantoms: chest radiographs (8-bit) and head CT (HU)."""


def _options(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise DataSourceError(f"phantom option {part!r} must look like key=value (e.g. phantom:per_class=300)")
        key, value = part.split("=", 1)
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def open_dataset(
    spec: str,
    size: int | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split_seed: int = 42,
    per_class: int = 300,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    max_pixels: int | None = None,
    modality: str = "cxr",
    depth: int | None = None,
) -> ImageDataset:
    """The dataset named by ``spec`` (see the module docstring), resized to ``size``.

    Args:
        spec: ``"phantom"`` (options after a colon: ``per_class``, ``seed``, ``size``,
            ``modality``, ``depth``), a
            folder, ``"nih:CSV,IMAGES_DIR"`` or ``"medmnist:FILE.npz"`` (or a bare ``.npz``).
        size: the side every image is resized to. Default None: own sizes (phantoms: 128 px).
        fractions: (train, val, test) split fractions. Default (0.6, 0.2, 0.2) (the study's);
            a folder with split folders and MedMNIST keep their own splits.
        split_seed: the split's seed. Default 42 (the study's).
        per_class: phantoms per class, unless the spec says. Default 300.
        seed: the phantoms' generator seed, unless the spec says. Default 0.
        classes: class names (folders: the folders to use, in order; NIH: the findings;
            MedMNIST: names for labels 0..K-1). Default None: the source's own (NIH: the
            study's three).
        max_pixels: the largest width x height read from a file. Default None: the library's
            limit.
        modality: the phantoms' modality, unless the spec says: ``cxr`` (chest radiographs, the
            default) or ``ct`` (head CT in HU, :class:`~medrobust.data.phantom.ct_dataset.CTPhantomDataset`,
            64 px in-plane unless ``size`` says).
        depth: slices per CT phantom, unless the spec says. Default None: 16.

    Returns:
        An :class:`~medrobust.data.dataset.ImageDataset` whose records carry their split.

    Raises:
        DataSourceError: the spec names no source, or the source cannot be read.

    Example:

    >>> dataset = open_dataset("phantom:per_class=2,size=32")
    >>> len(dataset), dataset.classes, dataset[0][0].shape
    (6, ['Normal', 'Pneumonia', 'Pneumothorax'], torch.Size([1, 32, 32]))
    """
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    if spec == "phantom" and Path(spec).exists():
        raise DataSourceError("'phantom' names the built-in synthetic radiographs, and there is also a folder "
                              "./phantom here: give ./phantom for the folder, or phantom: for the synthetic images")
    if kind == "phantom":
        from medrobust.data.phantom import PhantomDataset

        opts = _options(rest)
        unknown = set(opts) - {"per_class", "seed", "size", "modality", "depth"}
        if unknown:
            raise DataSourceError(f"unknown phantom option(s) {sorted(unknown)}; use per_class, seed, size, modality, "
                                  "depth")
        modality = opts.get("modality", modality).strip().lower()
        if modality not in PHANTOM_MODALITIES:
            raise DataSourceError(f"phantom modality {modality!r}: use cxr (chest radiographs) or ct (head CT in HU)")
        if modality == "ct":
            from medrobust.data.phantom.ct_dataset import CTPhantomDataset

            return CTPhantomDataset(per_class=int(opts.get("per_class", per_class)),
                                    size=int(opts.get("size", size or 64)), depth=int(opts.get("depth", depth or 16)),
                                    seed=int(opts.get("seed", seed)), fractions=fractions, split_seed=split_seed)
        if "depth" in opts or depth is not None:
            raise DataSourceError("phantom option depth is for CT phantoms (modality=ct); the chest radiographs have "
                                  "no slices")
        return PhantomDataset(
            per_class=int(opts.get("per_class", per_class)),
            size=int(opts.get("size", size or 128)),
            seed=int(opts.get("seed", seed)),
            fractions=fractions,
            split_seed=split_seed,
        )
    if kind == "nih":
        from medrobust.data.nih import NIH_CLASSES, nih_dataset

        parts = [p.strip() for p in rest.split(",")]
        if len(parts) != 2 or not all(parts):
            raise DataSourceError(f"{spec!r}: write nih:CSV,IMAGES_DIR (the label table, then the image folder)")
        return nih_dataset(parts[0], parts[1], classes=classes or NIH_CLASSES, fractions=fractions,
                           seed=split_seed, size=size, max_pixels=max_pixels)
    if kind == "medmnist" or spec.endswith(".npz"):
        from medrobust.data.medmnist import medmnist_dataset

        return medmnist_dataset(rest if kind == "medmnist" else spec, classes=classes, size=size)
    path = Path(spec)
    if path.is_dir():
        from medrobust.data.folders import folder_dataset

        return folder_dataset(path, classes=classes, size=size, split=fractions, seed=split_seed, max_pixels=max_pixels)
    raise DataSourceError(
        f"{spec!r} is not a data source: use 'phantom', a folder of <Class>/ subfolders, "
        "'nih:CSV,IMAGES_DIR' or 'medmnist:FILE.npz'"
    )


def clean_image_folder(root: str | Path, size: int | None = None, max_pixels: int | None = None) -> ImageDataset:
    """Every image under ``root`` (class sub-folders or none), unlabelled: images known to be
    unattacked, e.g. to calibrate a detector (:func:`~medrobust.data.folders.unlabelled_images`).

    Args:
        root: the folder.
        size: the side every image is resized to. Default None: own sizes.
        max_pixels: the largest width x height read. Default None: the library's limit.

    Returns:
        An :class:`~medrobust.data.dataset.ImageDataset` of one class, every record in split
        ``"test"``.

    Raises:
        DataSourceError: the folder is missing or holds no image file.
    """
    from medrobust.data.folders import unlabelled_images
    from medrobust.data.io import IMAGE_FILES

    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"{root}: folder not found; point at a folder of clean images")
    dataset = unlabelled_images([root], size=size, max_pixels=max_pixels)
    if not dataset.records:
        raise DataSourceError(f"{root}: holds no image files ({IMAGE_FILES}); add clean images to calibrate on")
    return dataset
