"""NIH ChestX-ray14: the label table, class selection, and a patient-grouped dataset.

The study used three classes of ChestX-ray14 — ``Normal`` ("No Finding"), ``Pneumonia``
and ``Pneumothorax`` — balanced and split 60/20/20. Two departures, both deliberate:

* splits are grouped by patient (:func:`~medrobust.data.splits.patient_grouped_split`):
  ChestX-ray14 holds up to hundreds of follow-up images per patient, and an image-level
  split leaks patients into the test set;
* balancing only down-samples (:func:`~medrobust.data.balance.downsample_to_smallest`),
  never copies, so no near-duplicate crosses the split.

The label table is ``Data_Entry_2017.csv`` (or the ``_v2020`` variant, or either
gzipped). Only ``Image Index``, ``Finding Labels`` and ``Patient ID`` are read, by name,
so the trailing columns — whose bracketed headers such as ``OriginalImage[Width,Height]``
spill into extra unnamed columns — do not matter. No pandas: the csv module is enough.

Images are looked up in ``images_dir``, ``images_dir/images`` and
``images_dir/images_NNN/images`` (the layout of the official tarballs), through one
directory scan rather than a file-system call per row.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrobust.data.balance import downsample_to_smallest
from medrobust.data.class_names import canonical_class_name, class_positions
from medrobust.data.dataset import FileImageDataset, ImageRecord
from medrobust.data.errors import DataSourceError, SkippedFile
from medrobust.data.splits import dataset_split_summary, patient_grouped_split

log = logging.getLogger(__name__)

NIH_CLASSES = ("Normal", "Pneumonia", "Pneumothorax")
"""The study's three classes."""

NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
    "Hernia", "Infiltration", "Mass", "No Finding", "Nodule", "Pleural_Thickening", "Pneumonia",
    "Pneumothorax",
)
"""Every value that appears in the ``Finding Labels`` column (joined by ``|``)."""

_CLASS_TO_FINDING = {"normal": "No Finding"}  # keyed by canonical class name
_REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
_SUBFOLDER = re.compile(r"images_\d+")
_SHOW_MISSING = 5


@dataclass(frozen=True)
class NihRow:
    """One row of the label table: the image file name, its findings, its patient."""

    image_index: str
    findings: tuple[str, ...]
    patient_id: str


def finding_for_class(name: str) -> str:
    """The ``Finding Labels`` value behind a class name, compared canonically
    (:func:`~medrobust.data.class_names.class_positions`): ``"Normal"`` -> ``"No Finding"``,
    ``"pleural thickening"`` -> ``"Pleural_Thickening"``."""
    (position,) = class_positions([_CLASS_TO_FINDING.get(canonical_class_name(name), name)], NIH_FINDINGS)
    if position is None:
        raise DataSourceError(
            f"'{name}' is not an NIH ChestX-ray14 finding; use 'Normal' or one of {', '.join(NIH_FINDINGS)}"
        )
    return NIH_FINDINGS[position]


def read_nih_table(csv_path: str | os.PathLike[str]) -> list[NihRow]:
    """Read the NIH label table (``.csv`` or gzipped) into :class:`NihRow` objects, in file order.

    Rows too short to hold the three columns read are skipped with one warning.

    Args:
        csv_path: ``Data_Entry_2017.csv`` (or the ``_v2020`` variant, or either gzipped).

    Returns:
        One :class:`NihRow` per row.

    Raises:
        DataSourceError: the file is missing or unreadable, or lacks one of ``Image Index``,
            ``Finding Labels``, ``Patient ID``.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise DataSourceError(
            f"{path}: label table not found; give the path to Data_Entry_2017.csv (or .csv.gz) of NIH ChestX-ray14"
        )
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DataSourceError(f"{path}: label table is empty; use Data_Entry_2017.csv of NIH ChestX-ray14")
            columns = _column_positions(path, [name.strip() for name in header])
            rows, short = _parse_rows(reader, columns)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise DataSourceError(
            f"{path}: cannot be read as a CSV table ({err}); use Data_Entry_2017.csv of NIH ChestX-ray14"
        ) from err
    if short:
        log.warning("%s: skipped %d row(s) with too few columns", path, short)
    return rows


def _open_text(path: Path) -> io.TextIOBase:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")  # type: ignore[return-value]
    return path.open("r", encoding="utf-8-sig", newline="")  # type: ignore[return-value]


def _column_positions(path: Path, header: list[str]) -> tuple[int, int, int]:
    positions = []
    for name in _REQUIRED_COLUMNS:
        if name not in header:
            raise DataSourceError(
                f"{path}: required column '{name}' is missing (header: {', '.join(header)}); "
                "use Data_Entry_2017.csv of NIH ChestX-ray14"
            )
        positions.append(header.index(name))
    return positions[0], positions[1], positions[2]


def _parse_rows(reader: Iterable[list[str]], columns: tuple[int, int, int]) -> tuple[list[NihRow], int]:
    image_col, findings_col, patient_col = columns
    needed = max(columns) + 1
    rows: list[NihRow] = []
    short = 0
    for fields in reader:
        if not fields or not any(f.strip() for f in fields):
            continue
        if len(fields) < needed or not fields[image_col].strip():
            short += 1
            continue
        findings = tuple(f.strip() for f in fields[findings_col].split("|") if f.strip())
        rows.append(NihRow(fields[image_col].strip(), findings, _normalise_patient(fields[patient_col])))
    return rows, short


def _normalise_patient(value: str) -> str:
    """``"00042"`` and ``"42"`` are the same patient."""
    value = value.strip()
    return str(int(value)) if value.isdigit() else value


def select_nih(
    rows: Sequence[NihRow],
    classes: Sequence[str] = NIH_CLASSES,
    single_label_only: bool = True,
    balance: bool = False,
    seed: int = 42,
) -> list[tuple[NihRow, int]]:
    """Pick the rows of ``classes`` and label them by class index, keeping table order.

    ``single_label_only``: keep images whose findings are exactly one selected finding
    (the study's reading, and the cleanest labels). Otherwise keep every image carrying a
    selected finding; an image carrying several selected findings goes to the **rarer**
    one, counted over ``rows`` (ties: the earlier class), because the rare class is the
    one short of examples. "No Finding" never co-occurs with a finding in ChestX-ray14.

    Args:
        rows: the label table (:func:`read_nih_table`).
        classes: class names, each ``Normal`` or an NIH finding (compared canonically).
            Default the study's three, :data:`NIH_CLASSES`.
        single_label_only: see above. Default True.
        balance: down-sample every class to the smallest one (seeded, no copies). Default False.
        seed: the balancing's seed. Default 42.

    Returns:
        ``[(row, class index), ...]`` in table order.

    Raises:
        DataSourceError: an unknown class, two classes naming one finding, or a class with no
            image when balancing.
    """
    findings = [finding_for_class(c) for c in classes]
    if len(set(findings)) != len(findings):
        raise DataSourceError(f"classes {list(classes)} name the same finding twice; list each finding once")
    index_of = {f: k for k, f in enumerate(findings)}
    selected: list[tuple[NihRow, int]] = []
    if single_label_only:
        for row in rows:
            if len(row.findings) == 1 and row.findings[0] in index_of:
                selected.append((row, index_of[row.findings[0]]))
    else:
        carriers = np.zeros(len(findings), dtype=np.int64)
        for row in rows:
            for f in set(row.findings):
                if f in index_of:
                    carriers[index_of[f]] += 1
        # Rarer first; ties keep class order.
        preference = {int(k): rank for rank, k in enumerate(np.argsort(carriers, kind="stable"))}
        for row in rows:
            hits = {index_of[f] for f in row.findings if f in index_of}
            if hits:
                selected.append((row, int(min(hits, key=preference.__getitem__))))
    if balance and selected:
        counts = np.bincount([label for _, label in selected], minlength=len(classes))
        if np.any(counts == 0):
            empty = [c for c, n in zip(classes, counts) if n == 0]
            raise DataSourceError(
                f"cannot balance: no image of class {', '.join(empty)}; drop that class or turn balancing off"
            )
        keep = downsample_to_smallest([label for _, label in selected], seed)
        selected = [selected[i] for i in keep]
    return selected


def index_nih_images(images_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Map file name -> path for every file in ``images_dir``, ``images_dir/images`` and
    ``images_dir/images_NNN[/images]``. One ``os.scandir`` per folder; the first hit wins."""
    root = Path(images_dir)
    folders = [root, root / "images"]
    try:
        with os.scandir(root) as entries:
            subfolders = sorted(e.name for e in entries if e.is_dir() and _SUBFOLDER.fullmatch(e.name))
    except OSError:
        subfolders = []
    for name in subfolders:
        folders += [root / name, root / name / "images"]
    found: dict[str, Path] = {}
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not entry.name.startswith(".") and entry.is_file() and entry.name not in found:
                        found[entry.name] = Path(entry.path)
        except OSError:
            continue
    return found


def nih_dataset(
    csv_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    classes: Sequence[str] = NIH_CLASSES,
    single_label_only: bool = True,
    balance: bool = False,
    fractions: Sequence[float] | None = (0.6, 0.2, 0.2),
    seed: int = 42,
    size: int | tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> FileImageDataset:
    """ChestX-ray14 as a :class:`FileImageDataset` with patient-grouped splits.

    Rows are selected with :func:`select_nih`; rows whose image is not under
    ``images_dir`` are left out, logged once, and recorded in ``dataset.skipped``;
    balancing (if asked) happens after that, on the images that exist, so the classes
    really come out equal; then :func:`patient_grouped_split` fills ``record.split``.

    Args:
        csv_path: the label table (:func:`read_nih_table`).
        images_dir: the folder of the PNG files (also searched: ``images/`` and
            ``images_NNN/images/``, the official tarballs' layout).
        classes: class names (:func:`select_nih`). Default :data:`NIH_CLASSES`.
        single_label_only: keep only images with exactly one selected finding. Default True.
        balance: down-sample every class to the smallest. Default False.
        fractions: (train, val, test) fractions of the patient-grouped split. Default
            (0.6, 0.2, 0.2) (the study's); None: no split.
        seed: the seed of the balancing and the split. Default 42.
        size: the side or ``(H, W)`` every image is resized to. Default None: own sizes.
        max_pixels: the largest width x height read. Default None: the library's limit.

    Returns:
        The dataset; ``record.id`` is the Image Index and ``record.patient`` the Patient ID.

    Raises:
        DataSourceError: the folder or table is missing, no image carries the classes, none
            of the selected images is there, or a class has no image.
    """
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    if not images_dir.is_dir():
        raise DataSourceError(f"{images_dir}: image folder not found; point at the folder holding the NIH PNG files")
    rows = read_nih_table(csv_path)
    selected = select_nih(rows, classes, single_label_only=single_label_only, balance=False, seed=seed)
    if not selected:
        raise DataSourceError(
            f"{csv_path}: no image carries any of the findings {list(classes)}; check the class names"
        )

    files = index_nih_images(images_dir)
    if not files:
        raise DataSourceError(
            f"{images_dir}: no files found there, in images/ or in images_NNN/images/; "
            "point at the folder holding the NIH PNG files"
        )
    present = [(row, label) for row, label in selected if row.image_index in files]
    missing = [row.image_index for row, _ in selected if row.image_index not in files]
    if not present:
        raise DataSourceError(
            f"{images_dir}: none of the {len(selected)} selected images listed in {csv_path.name} is there; "
            "point at the folder holding the NIH PNG files"
        )
    if missing:
        shown = ", ".join(missing[:_SHOW_MISSING]) + (", ..." if len(missing) > _SHOW_MISSING else "")
        log.warning(
            "%d of %d selected images listed in %s were not found under %s and are left out (%s)",
            len(missing), len(selected), csv_path.name, images_dir, shown,
        )

    labels = np.array([label for _, label in present], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(classes))
    if np.any(counts == 0):
        empty = [c for c, n in zip(classes, counts) if n == 0]
        raise DataSourceError(
            f"{images_dir}: no image of class {', '.join(empty)} was found; add those images or drop the class"
        )
    if balance:
        keep = downsample_to_smallest(labels, seed)
        present = [present[i] for i in keep]
        labels = labels[keep]
    patients = np.array([row.patient_id for row, _ in present])
    splits: Sequence[str | None]
    if fractions is None:
        splits = [None] * len(present)
    else:
        splits = [str(s) for s in patient_grouped_split(labels, patients, fractions, seed)]

    records = [
        ImageRecord(label=label, id=row.image_index, path=files[row.image_index], split=split, patient=row.patient_id)
        for (row, label), split in zip(present, splits)
    ]
    dataset = FileImageDataset(records, classes, size=size, max_pixels=max_pixels)
    reason = f"listed in {csv_path.name} but not found under {images_dir}"
    dataset.skipped.extend(SkippedFile(path=name, reason=reason) for name in missing)
    return dataset


def nih_split_counts(dataset: FileImageDataset) -> str:
    """Per-class image counts per split, as a small table for the CLI."""
    return dataset_split_summary(dataset)
