"""MedMNIST ``.npz`` files (PneumoniaMNIST, BreastMNIST, OrganAMNIST, PathMNIST...).

A MedMNIST file holds ``{train,val,test}_images`` — uint8, (N, H, W) for grayscale sets
or (N, H, W, 3) for colour sets — and ``{train,val,test}_labels`` of shape (N, 1). Colour
images are reduced to ITU-R 601-2 luma, because everything in medrobust is one channel.
Multi-label sets (ChestMNIST, labels (N, 14)) are refused: a single-label classifier
cannot be scored on them.

MedMNIST 3D files (OrganMNIST3D, NoduleMNIST3D...) hold ``{split}_images`` of shape
(N, D, H, W), uint8 (28 or 64 voxels a side): their items are volumes (1, D, H, W) on the 8-bit
grid (:data:`~medrobust.data.stored_grid.EIGHT_BIT`: the file stores grey levels, not HU). A
(N, H, W, 3) or (N, H, W, 4) array is a colour 2-D set; any other 4-D array is read as volumes.

The file is opened with ``allow_pickle=False``: an ``.npz`` from elsewhere is data, never
code.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medrobust.data.ct_volume import check_volume_size
from medrobust.data.dataset import ArrayImageDataset, ImageRecord
from medrobust.data.errors import DataSourceError, ImageReadError
from medrobust.data.splits import SPLIT_NAMES

log = logging.getLogger(__name__)

_LUMA = np.array([0.299, 0.587, 0.114])


def medmnist_dataset(
    npz_path: str | os.PathLike[str],
    split: str | None = None,
    classes: Sequence[str] | None = None,
    size: int | tuple[int, int] | None = None,
) -> ArrayImageDataset:
    """A MedMNIST split (``"train"``, ``"val"``, ``"test"``) or, with None, all three.

    Args:
        npz_path: the MedMNIST ``.npz`` file (opened without pickles).
        split: ``"train"``, ``"val"`` or ``"test"``. Default None: the three concatenated, every
            record carrying its split.
        classes: names for labels 0..K-1, at least K of them. Default None:
            ``class0 .. class{K-1}`` with K = largest label in the file + 1.
        size: the side or ``(H, W)`` every image is resized to. Default None: the file's size.

    Returns:
        An :class:`~medrobust.data.dataset.ArrayImageDataset` (images (1, H, W) float32 in
        [0, 1]; colour sets reduced to luma), ids ``<split>-<index>`` (``train-000123``).

    Raises:
        ValueError: ``split`` is not a split name.
        DataSourceError: the file is missing, not an npz, lacks a key, holds multi-label or
            malformed arrays, or has fewer class names than labels (the message names the file
            and the key).
    """
    path = Path(npz_path)
    if split is not None and split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES} or None, got {split!r}")
    if not path.is_file():
        raise DataSourceError(f"{path}: file not found; give the path to a MedMNIST .npz file")
    wanted = SPLIT_NAMES if split is None else (split,)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataSourceError(f"{path}: holds a single array, not a MedMNIST .npz archive; use the .npz file")
        with loaded as npz:
            keys = set(npz.files)
            all_labels = {s: _labels(path, npz, s) for s in SPLIT_NAMES if f"{s}_labels" in keys}
            for s in wanted:
                if s not in all_labels:
                    raise _missing_key(path, f"{s}_labels", keys)
            images = {s: _images(path, npz, s, keys) for s in wanted}
    except DataSourceError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataSourceError(f"{path}: cannot be read as an .npz archive ({err}); use a MedMNIST .npz file") from err

    non_empty = [lab for lab in all_labels.values() if lab.size]
    n_classes = max(int(lab.max()) for lab in non_empty) + 1 if non_empty else 0
    if classes is None:
        class_names = [f"class{k}" for k in range(n_classes)]
    else:
        class_names = list(classes)
        if len(class_names) < n_classes:
            raise DataSourceError(
                f"{path}: labels go up to {n_classes - 1} but only {len(class_names)} class names were given; "
                f"give {n_classes} names"
            )

    records: list[ImageRecord] = []
    for s in wanted:
        labels, count = all_labels[s], len(all_labels[s])
        if len(images[s]) != count:
            raise DataSourceError(
                f"{path}: '{s}_images' holds {len(images[s])} images but '{s}_labels' {count} labels; "
                "the file is damaged, download it again"
            )
        records += [
            ImageRecord(label=int(lab), id=f"{s}-{i:06d}", split=s)
            for i, lab in enumerate(labels)
        ]
    stacked = np.concatenate([images[s] for s in wanted]) if len(wanted) > 1 else images[wanted[0]]
    if stacked.ndim == 4 and size is not None:
        raise DataSourceError(f"{path}: holds 3D volumes of {'x'.join(map(str, stacked.shape[1:]))} voxels, which "
                              f"are not resized; leave the size ({size}) out")
    log.info("%s: %d images (%s) in %d classes", path, len(records), "+".join(wanted), len(class_names))
    return ArrayImageDataset(stacked, records, class_names, size=size)


def _missing_key(path: Path, key: str, keys: set[str]) -> DataSourceError:
    return DataSourceError(
        f"{path}: key '{key}' is missing (keys present: {', '.join(sorted(keys)) or 'none'}); "
        "use a MedMNIST .npz file with train/val/test images and labels"
    )


def _labels(path: Path, npz: np.lib.npyio.NpzFile, split: str) -> np.ndarray:
    key = f"{split}_labels"
    labels = np.asarray(npz[key])
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise DataSourceError(
            f"{path}: '{key}' has {labels.shape[1]} labels per image (a multi-label set such as ChestMNIST), "
            "which this loader does not support yet; use a single-label MedMNIST file"
        )
    if labels.ndim == 2:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataSourceError(
            f"{path}: '{key}' should hold integer labels of shape (N, 1), got {labels.dtype} {labels.shape}; "
            "use a MedMNIST .npz file"
        )
    if labels.size and labels.min() < 0:
        raise DataSourceError(f"{path}: '{key}' holds negative labels; labels must be class indices 0..K-1")
    return labels.astype(np.int64)


def _images(path: Path, npz: np.lib.npyio.NpzFile, split: str, keys: set[str]) -> np.ndarray:
    key = f"{split}_images"
    if key not in keys:
        raise _missing_key(path, key, keys)
    images = np.asarray(npz[key])
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim == 4 and images.shape[-1] not in (1, 3, 4):  # MedMNIST 3D: (N, D, H, W) volumes
        try:
            check_volume_size(images.shape[1:], f"{path}: '{key}'")
        except ImageReadError as err:  # absurd dimensions: the whole file is unusable
            raise DataSourceError(str(err)) from None
    elif images.ndim == 4 and images.shape[-1] in (3, 4):
        rgb = images[..., :3].astype(np.float32) @ _LUMA.astype(np.float32)
        if images.dtype in (np.uint8, np.uint16):
            images = np.clip(np.rint(rgb), 0, np.iinfo(images.dtype).max).astype(images.dtype)
        else:
            images = rgb
    if images.ndim not in (3, 4):
        raise DataSourceError(
            f"{path}: '{key}' should have shape (N, H, W), (N, H, W, 3) or (N, D, H, W) (3D), got {images.shape}; "
            "use a MedMNIST .npz file"
        )
    if images.dtype in (np.uint8, np.uint16):
        return images
    if np.issubdtype(images.dtype, np.floating) and (images.size == 0 or (images.min() >= 0 and images.max() <= 1)):
        return images
    raise DataSourceError(
        f"{path}: '{key}' has pixel type {images.dtype} (range unknown); expected uint8 as in MedMNIST, "
        "or floats in [0, 1]"
    )
