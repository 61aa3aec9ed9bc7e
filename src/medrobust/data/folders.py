"""Class-per-folder image trees: the simplest way for users to bring their own images.

Two layouts are recognised::

    root/<Class>/**/*.png|jpg|jpeg|dcm|dicom         split assigned here (optional)
    root/{train,val,test}/<Class>/**/*.png|...       split taken from the folders

A class folder may also hold CT volumes (:mod:`medrobust.data.volume_entries`): series folders
(a sub-folder of two or more CT DICOM slices, any file names: one volume, slices ordered by
position), NIfTI files (``.nii``, ``.nii.gz``) and single CT slices. Such a tree is on the CT grid
(``dataset.grid`` is :data:`~medrobust.data.stored_grid.CT_HU`: budgets in HU); a tree of both CT
and 8-bit images is refused. A series that cannot be read as one volume (slices of two series, a
gap, two slices at one position, a truncated slice) is skipped with its reason, like any
unreadable file, and the run goes on.

The second is detected when every visible top-level folder is a split name (``train``,
``val``, ``valid``, ``validation``, ``test``; any case). Suffixes match case-insensitively,
and a file of any other name is an image when it is DICOM (``DICM`` at byte 128: clinical
exports often carry no suffix; :func:`~medrobust.data.io.is_image_file` decides). Hidden
files and folders (and macOS ``__MACOSX`` archive debris) are skipped, other files are
ignored, and files are listed in sorted order so a dataset is the same on every machine.
Record ids are paths relative to ``root`` in posix form, with any byte of a name that is not
valid UTF-8 escaped as ``\\xNN`` (:mod:`medrobust.data.record_ids`), so ids always survive
JSON; the record keeps the real path.

An image-named entry that is not a readable file (a broken or looping symbolic link, a FIFO)
is not dropped silently: it is listed in ``dataset.skipped`` from the start, like a file
that later turns out unreadable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from medrobust.data.dataset import FileImageDataset, ImageRecord
from medrobust.data.errors import DataSourceError, SkippedFile
from medrobust.data.io import IMAGE_FILES, is_image_file
from medrobust.data.record_ids import printable_path
from medrobust.data.splits import SPLIT_NAMES, stratified_split
from medrobust.data.stored_grid import CT_HU, EIGHT_BIT, StoredGrid
from medrobust.logs.per_image_log import per_image_log

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
    """A :class:`FileImageDataset` over a class-per-folder tree (either layout of the module
    docstring).

    Args:
        root: the tree's top folder.
        classes: None takes the class folders' names, sorted; a list fixes the class order and
            requires each folder to exist (exact, case-sensitive name), ignoring others.
            Default None.
        size: the side or ``(H, W)`` every image is resized to. Default None: own sizes.
        split: (train, val, test) fractions for a stratified split of a flat tree
            (:func:`~medrobust.data.splits.stratified_split`, seeded); ignored when the tree has
            split folders. Default None: no split assigned.
        seed: the split's seed. Default 42 (the study's).
        max_pixels: the largest width x height read. Default None: the library's limit.

    Returns:
        The dataset; records are in sorted file order, ids relative to ``root``, and entries
        that are not readable files are already listed in ``dataset.skipped``.

    Raises:
        DataSourceError: a missing root, no class folders, a missing class folder or a class
            folder without images.
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
    skipped: list[SkippedFile] = []
    taken: dict[str, Path] = {}
    for split_name, base in parts:
        present = set(_visible_subfolders(base))
        for label, name in enumerate(class_names):
            if name not in present:
                log.warning("%s has no '%s' folder; that split has no %s images", base, name, name)
                continue
            files, not_files = _image_files(base / name, volumes=True)
            skipped += not_files
            if not files:
                also = f" ({len(not_files)} entries that are not readable files were skipped)" if not_files else ""
                raise DataSourceError(
                    f"{printable_path(base / name)}: class folder holds no image files "
                    f"({IMAGE_FILES}){also}; add images or remove the folder"
                )
            for f in files:
                record_id = printable_path(f.relative_to(root).as_posix())
                if record_id in taken:  # only an escaped name can read like another one
                    skipped.append(SkippedFile(printable_path(f), (
                        f"its name, with undecodable bytes shown as \\xNN, reads the same as "
                        f"{printable_path(taken[record_id])}; rename one of them")))
                    continue
                taken[record_id] = f
                records.append(ImageRecord(label=label, id=record_id, path=f, split=split_name))

    if split is not None and not split_layout:
        assigned = stratified_split([r.label for r in records], split, seed)
        records = [replace(r, split=str(s)) for r, s in zip(records, assigned)]
    log.info("%s: %d images in %d classes", root, len(records), len(class_names))
    dataset = FileImageDataset(records, class_names, size=size, max_pixels=max_pixels)
    dataset.grid = _one_grid(root, records)
    for entry in skipped:
        per_image_log.warning("skipping %s", entry)
    dataset.skipped.extend(skipped)
    return dataset


def _one_grid(root: Path, records: list[ImageRecord]) -> StoredGrid:
    """The one stored grid of a tree's images: CT when it holds CT volumes or slices, else 8-bit;
    a tree holding both is refused (a run rounds every image to one grid, and states budgets in
    one unit). Decided from each folder's first entry of each kind, so no pixel is read."""
    from medrobust.data.volume_entries import entry_grid, is_volume_entry

    seen: dict[str, Path] = {}
    kinds: set[tuple[Path, str]] = set()
    for r in records:
        assert r.path is not None
        volume = is_volume_entry(r.path)
        kind = (r.path.parent, "volume" if volume else r.path.suffix.lower())
        if kind in kinds:
            continue
        kinds.add(kind)
        grid = entry_grid(r.path)
        seen.setdefault(grid.name, r.path)
        if len(seen) > 1:
            ct, eight = seen[CT_HU.name], seen[EIGHT_BIT.name]
            raise DataSourceError(
                f"{root}: holds both CT in HU ({printable_path(ct)}) and 8-bit images ({printable_path(eight)}); "
                "a run reads one kind: keep the CT series, volumes and slices in one tree and the 8-bit images "
                "in another")
    return CT_HU if CT_HU.name in seen else EIGHT_BIT


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


def _image_files(folder: Path, volumes: bool = False) -> tuple[list[Path], list[SkippedFile]]:
    """Image files anywhere under ``folder`` in sorted posix order, skipping hidden entries;
    and the image-named entries that are not readable files, each with the reason.

    With ``volumes``, CT volumes count as entries too (:mod:`~medrobust.data.volume_entries`): a
    sub-folder holding two or more CT DICOM files is one entry (a series; not searched further),
    and a ``.nii``/``.nii.gz`` file is one."""
    from medrobust.data.nifti import is_nifti_name
    from medrobust.data.volume_entries import is_ct_series_folder

    files: list[Path] = []
    not_files: list[SkippedFile] = []
    for current, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _IGNORED_FOLDERS)
        base = Path(current)
        found: list[Path] = []
        for name in sorted(names):
            path = base / name
            if name.startswith("."):
                continue
            if volumes and is_nifti_name(name):
                found.append(path)
                continue
            if not is_image_file(path):
                continue
            if path.is_file():  # follows links; False for a broken or looping one
                found.append(path)
            else:
                not_files.append(SkippedFile(printable_path(path), _not_a_file_reason(path)))
        dicoms = [p for p in found if not is_nifti_name(p.name) and p.is_file()]
        if volumes and base != folder and is_ct_series_folder(base, dicoms):
            files.append(base)  # one series: its slices are read together
            files += [p for p in found if p not in dicoms]
            dirs[:] = []
            continue
        files += found
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix()), sorted(not_files, key=lambda s: s.path)


def _not_a_file_reason(path: Path) -> str:
    if path.is_symlink():
        return "broken or looping symbolic link; remove it or point it at an image"
    return "not a regular file (a FIFO, socket or device); remove it or replace it with an image file"


UNLABELLED = "(unlabelled)"
"""The one class name of an :func:`unlabelled_images` dataset."""


def unlabelled_images(
    sources: Sequence[str | os.PathLike[str]],
    size: int | tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> FileImageDataset:
    """Every image in ``sources`` (files, and folders searched recursively), without labels; CT
    volumes as in :func:`folder_dataset` (a series folder, given or found, is one volume; a NIfTI
    file is one).

    Record ids are paths relative to their folder (a file given by itself: its name), so two
    folders of the same images (originals, and attacked or defended copies) have the same ids
    and pair up. Hidden entries are skipped; image-named entries that are not readable files
    (broken links, FIFOs), and files given by themselves that do not exist, are listed in
    ``dataset.skipped``.

    Args:
        sources: image files and folders.
        size: the side or ``(H, W)`` every image is resized to. Default None: own sizes.
        max_pixels: the largest width x height read. Default None: the library's limit.

    Returns:
        A :class:`FileImageDataset` whose every record has label 0 of one class,
        :data:`UNLABELLED`, and split ``"test"``.

    Raises:
        DataSourceError: a source that does not exist, or no image file at all.
    """
    from medrobust.data.dicom_series import series_files
    from medrobust.data.volume_entries import is_ct_series_folder

    records: list[ImageRecord] = []
    skipped: list[SkippedFile] = []
    taken: set[str] = set()
    for source in sources:
        path = Path(source)
        if path.is_dir() and is_ct_series_folder(path, series_files(path)):
            named = [(path, printable_path(path.name))]  # a CT series given by its folder: one volume
        elif path.is_dir():
            files, not_files = _image_files(path, volumes=True)
            skipped += not_files
            named = [(f, printable_path(f.relative_to(path).as_posix())) for f in files]
        elif path.is_file() or path.is_symlink() or is_image_file(path):
            if not path.is_file():
                skipped.append(SkippedFile(printable_path(path), "file not found; check the path"
                                           if not path.is_symlink() else _not_a_file_reason(path)))
                continue
            named = [(path, printable_path(path.name))]
        else:
            raise DataSourceError(f"{printable_path(path)}: not found; pass image files or folders of images")
        for f, record_id in named:
            if record_id in taken:  # the same name in two sources: keep both, tell them apart
                record_id = printable_path(f.as_posix())
            taken.add(record_id)
            records.append(ImageRecord(label=0, id=record_id, path=f, split="test"))
    if not records and not skipped:
        where = ", ".join(printable_path(s) for s in sources)
        raise DataSourceError(f"{where}: holds no image files ({IMAGE_FILES}); check the folder")
    dataset = FileImageDataset(records, [UNLABELLED], size=size, max_pixels=max_pixels)
    dataset.grid = _one_grid(Path(sources[0]), records)
    for entry in skipped:
        per_image_log.warning("skipping %s", entry)
    dataset.skipped.extend(skipped)
    return dataset
