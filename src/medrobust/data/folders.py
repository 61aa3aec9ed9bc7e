"""Class-per-folder image trees: the simplest way for users to bring their own images.

Two layouts are recognised::

    root/<Class>/**/*.png|jpg|jpeg|dcm               split assigned here (optional)
    root/{train,val,test}/<Class>/**/*.png|...       split taken from the folders

The second is detected when every visible top-level folder is a split name (``train``,
``val``, ``valid``, ``validation``, ``test``; any case). Suffixes match case-insensitively,
hidden files and folders (and macOS ``__MACOSX`` archive debris) are skipped, other files
are ignored, and files are listed in sorted order so a dataset is the same on every
machine. Record ids are paths relative to ``root`` in posix form.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from medrobust.data.dataset import FileImageDataset, ImageRecord
from medrobust.data.errors import DataSourceError
from medrobust.data.io import IMAGE_SUFFIXES, is_image_file
from medrobust.data.splits import SPLIT_NAMES, stratified_split

log = logging.getLogger(__name__)

_SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_IGNORED_FOLDERS = ("__MACOSX",)


def folder_dataset(
    root: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    size: int | tuple[int, int] | None = None,
    split: Sequence[float] | None = None,
    seed: int = 42,
    max_pixels: int | None = None,
) -> FileImageDataset:
    """A :class:`FileImageDataset` over a class-per-folder tree.

    ``classes``: None takes the class folders' names, sorted; a list fixes the class order
    and requires each folder to exist (exact, case-sensitive name), ignoring others.
    ``split``: (train, val, test) fractions for a stratified split of a flat tree
    (:func:`~medrobust.data.splits.stratified_split`, seeded); ignored when the tree has
    split folders. Raises :class:`DataSourceError` for a missing root, a missing class
    folder or a class folder without images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"{root}: folder not found; point at a folder holding one sub-folder per class")
    top = _visible_subfolders(root)
    if not top:
        raise DataSourceError(f"{root}: has no class folders; lay the images out as {root}/<Class>/<image>.png")

    split_layout = all(name.lower() in _SPLIT_FOLDERS for name in top)
    parts: list[tuple[str | None, Path]]
    if split_layout:
        by_split: dict[str, str] = {}
        for name in top:
            canonical = _SPLIT_FOLDERS[name.lower()]
            if canonical in by_split:
                raise DataSourceError(
                    f"{root}: both '{by_split[canonical]}' and '{name}' hold the {canonical} split; keep only one"
                )
            by_split[canonical] = name
        if split is not None:
            log.info("%s already has split folders (%s); ignoring the split fractions", root, ", ".join(top))
        parts = [(s, root / by_split[s]) for s in SPLIT_NAMES if s in by_split]
    else:
        parts = [(None, root)]

    class_names = _resolve_classes(root, parts, classes)
    records: list[ImageRecord] = []
    for split_name, base in parts:
        present = set(_visible_subfolders(base))
        for label, name in enumerate(class_names):
            if name not in present:
                log.warning("%s has no '%s' folder; that split has no %s images", base, name, name)
                continue
            files = _image_files(base / name)
            if not files:
                raise DataSourceError(
                    f"{base / name}: class folder holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
                    "add images or remove the folder"
                )
            records += [
                ImageRecord(label=label, id=f.relative_to(root).as_posix(), path=f, split=split_name) for f in files
            ]

    if split is not None and not split_layout:
        assigned = stratified_split([r.label for r in records], split, seed)
        records = [replace(r, split=str(s)) for r, s in zip(records, assigned)]
    log.info("%s: %d images in %d classes", root, len(records), len(class_names))
    return FileImageDataset(records, class_names, size=size, max_pixels=max_pixels)


def _visible_subfolders(folder: Path) -> list[str]:
    """Sorted names of the sub-folders of ``folder`` that are not hidden or archive debris."""
    with os.scandir(folder) as entries:
        return sorted(
            e.name for e in entries
            if e.is_dir() and not e.name.startswith(".") and e.name not in _IGNORED_FOLDERS
        )


def _resolve_classes(root: Path, parts: list[tuple[str | None, Path]], classes: Sequence[str] | None) -> list[str]:
    found = sorted({name for _, base in parts for name in _visible_subfolders(base)})
    if classes is None:
        if not found:
            raise DataSourceError(
                f"{root}: the split folders hold no class folders; "
                f"lay the images out as {root}/train/<Class>/<image>.png"
            )
        return found
    wanted = list(classes)
    if not wanted:
        raise DataSourceError(f"{root}: the list of classes is empty; name at least one class folder")
    if len(set(wanted)) != len(wanted):
        raise DataSourceError(f"{root}: classes {wanted} name a folder twice; list each class once")
    for name in wanted:
        if name not in found:
            where = root / name if parts[0][0] is None else root / "<split>" / name
            raise DataSourceError(
                f"{where}: class folder not found (folders present: {', '.join(found) or 'none'}); "
                "create it or remove the class from the list"
            )
    extra = [name for name in found if name not in wanted]
    if extra:
        log.info("%s: ignoring folders that are not among the classes: %s", root, ", ".join(extra))
    return wanted


def _image_files(folder: Path) -> list[Path]:
    """Image files anywhere under ``folder``, skipping hidden entries, in sorted posix order."""
    files: list[Path] = []
    for current, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _IGNORED_FOLDERS)
        base = Path(current)
        files += [base / n for n in names if not n.startswith(".") and is_image_file(n) and (base / n).is_file()]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())
