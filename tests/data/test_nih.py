"""NIH ChestX-ray14: label table parsing, selection, balancing, patient-grouped dataset."""

from __future__ import annotations

import gzip
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medrobust.data.errors import DataSourceError
from medrobust.data.nih import (
    NIH_CLASSES,
    NihRow,
    nih_dataset,
    nih_split_counts,
    read_nih_table,
    select_nih,
)
from medrobust.data.splits import patient_grouped_split

HEADER_2020 = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
HEADER_2017 = HEADER_2020 + ","  # the 2017 file ends every line with an empty column

# (findings, how many images): 30 Normal, 8 Pneumonia, 12 Pneumothorax single-label, plus mixtures.
TABLE = [
    ("No Finding", 30),
    ("Pneumonia", 8),
    ("Pneumothorax", 12),
    ("Pneumonia|Pneumothorax", 2),
    ("Effusion|Pneumothorax", 3),
    ("Infiltration|Pneumonia", 2),
    ("Effusion", 4),
    ("Cardiomegaly|Emphysema", 2),
]
MISSING = {"00000004_001.png", "00000012_000.png"}  # a Normal and a Pneumonia image listed but absent

REAL_CSV = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "nih" / "Data_Entry_2017_v2020.csv.gz"


def _rows():
    """(image index, findings, patient id): three images per patient, in table order."""
    out, i = [], 0
    for findings, n in TABLE:
        for _ in range(n):
            patient, follow_up = i // 3 + 1, i % 3
            out.append((f"{patient:08d}_{follow_up:03d}.png", findings, patient, follow_up))
            i += 1
    return out


def _csv_text(header=HEADER_2020, trailing=""):
    lines = [header]
    for name, findings, patient, follow_up in _rows():
        lines.append(f"{name},{findings},{follow_up},{patient},58,M,PA,2682,2749,0.143,0.143{trailing}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def nih(tmp_path):
    """A tiny ChestX-ray14: CSV + 8x8 PNGs split over images_001/images and images_002/images."""
    csv_path = tmp_path / "Data_Entry_2017_v2020.csv"
    csv_path.write_text(_csv_text())
    root = tmp_path / "nih"
    for i, (name, _findings, _, _) in enumerate(_rows()):
        if name in MISSING:
            continue
        folder = root / ("images_001" if i % 2 == 0 else "images_002") / "images"
        folder.mkdir(parents=True, exist_ok=True)
        value = np.full((8, 8), (i * 5) % 256, np.uint8)
        value[0, 0] = 255 - value[0, 0]  # one flat value would be skipped as degenerate
        image = Image.fromarray(value)
        if i % 7 == 3:  # a few RGBA files, as in the real set
            image = image.convert("RGBA")
        image.save(folder / name)
    return csv_path, root


def test_read_table_v2020_header(nih):
    csv_path, _ = nih
    rows = read_nih_table(csv_path)
    assert len(rows) == sum(n for _, n in TABLE)
    assert rows[0] == NihRow("00000001_000.png", ("No Finding",), "1")
    assert rows[30].findings == ("Pneumonia",)
    assert ("Pneumonia", "Pneumothorax") in {r.findings for r in rows}


def test_read_table_gzip_and_2017_header(tmp_path, nih):
    csv_path, _ = nih
    gz = tmp_path / "Data_Entry_2017.csv.gz"
    with gzip.open(gz, "wt", newline="") as handle:
        handle.write(_csv_text(HEADER_2017, trailing=","))
    assert read_nih_table(gz) == read_nih_table(csv_path)


def test_read_table_missing_column(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("Image Index,Finding Labels,Follow-up #\nx.png,No Finding,0\n")
    with pytest.raises(DataSourceError, match=r"labels.csv: required column 'Patient ID' is missing"):
        read_nih_table(path)


def test_read_table_missing_or_not_csv(tmp_path):
    with pytest.raises(DataSourceError, match="absent.csv: label table not found"):
        read_nih_table(tmp_path / "absent.csv")
    bad = tmp_path / "broken.csv.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(DataSourceError, match="broken.csv.gz: cannot be read"):
        read_nih_table(bad)


def test_select_single_label(nih):
    selected = select_nih(read_nih_table(nih[0]))
    assert Counter(label for _, label in selected) == {0: 30, 1: 8, 2: 12}
    assert all(len(row.findings) == 1 for row, _ in selected)


def test_select_any_label_assigns_mixtures_to_the_rarer_class(nih):
    selected = select_nih(read_nih_table(nih[0]), single_label_only=False)
    # carriers: Pneumonia 8 + 2 + 2 = 12, Pneumothorax 12 + 2 + 3 = 17 -> mixtures go to Pneumonia
    assert Counter(label for _, label in selected) == {0: 30, 1: 12, 2: 15}
    both = [label for row, label in selected if {"Pneumonia", "Pneumothorax"} <= set(row.findings)]
    assert both == [1, 1]


def test_select_balance_downsamples(nih):
    rows = read_nih_table(nih[0])
    selected = select_nih(rows, balance=True, seed=3)
    assert Counter(label for _, label in selected) == {0: 8, 1: 8, 2: 8}
    names = [row.image_index for row, _ in selected]
    assert len(set(names)) == len(names)  # down-sampled, never copied
    order = [r.image_index for r in rows]
    assert names == sorted(names, key=order.index)  # table order kept
    assert select_nih(rows, balance=True, seed=3) == selected
    assert select_nih(rows, balance=True, seed=4) != selected


def test_select_other_classes_and_unknown_class(nih):
    rows = read_nih_table(nih[0])
    selected = select_nih(rows, classes=("Effusion", "Normal"))
    assert Counter(label for _, label in selected) == {0: 4, 1: 30}
    with pytest.raises(DataSourceError, match="'Pneumothorex' is not an NIH ChestX-ray14 finding"):
        select_nih(rows, classes=("Normal", "Pneumothorex"))


def test_dataset_patient_grouped_with_missing_files(nih, caplog):
    csv_path, root = nih
    with caplog.at_level(logging.WARNING, logger="medrobust.data.nih"):
        ds = nih_dataset(csv_path, root, size=8)
    assert ds.classes == list(NIH_CLASSES)
    assert len(ds) == 50 - len(MISSING)
    assert {s.path for s in ds.skipped} == MISSING
    assert all(s.reason == f"listed in {csv_path.name} but not found under {root}" for s in ds.skipped)
    assert "2 of 50 selected images" in caplog.text and "00000004_001.png" in caplog.text
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    summary = ds.skipped_summary()
    assert "00000004_001.png" in summary and "00000012_000.png" in summary

    by_split: dict[str, set[str]] = {}
    for r in ds.records:
        assert r.patient is not None and r.split in ("train", "val", "test")
        assert r.path is not None and r.path.name == r.id
        by_split.setdefault(r.split, set()).add(r.patient)
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"]
                or by_split["val"] & by_split["test"])

    images, labels, ids = ds.load()
    assert images.shape == (48, 1, 8, 8) and len(ids) == 48
    table = nih_split_counts(ds)
    assert table.splitlines()[0].split() == ["class", "train", "val", "test", "total"]
    assert table.splitlines()[-1].split()[-1] == "48"


def test_dataset_balanced_after_missing_files(nih):
    csv_path, root = nih
    ds = nih_dataset(csv_path, root, balance=True, seed=1)
    counts = ds.class_counts()
    assert len(set(counts.values())) == 1  # equal, on images that exist
    assert counts["Pneumonia"] == 7  # 8 listed, one missing
    assert len({r.id for r in ds.records}) == len(ds)


def test_dataset_without_split_and_flat_folder(tmp_path, nih):
    csv_path, root = nih
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in root.rglob("*.png"):
        path.rename(flat / path.name)
    ds = nih_dataset(csv_path, flat, fractions=None, single_label_only=False)
    assert all(r.split is None for r in ds.records)
    assert len(ds) == 57 - len(MISSING)


def test_dataset_images_folder_layout(tmp_path, nih):
    csv_path, root = nih
    images = tmp_path / "alt" / "images"
    images.mkdir(parents=True)
    for path in root.rglob("*.png"):
        path.rename(images / path.name)
    assert len(nih_dataset(csv_path, tmp_path / "alt")) == 48


def test_dataset_wrong_folder(tmp_path, nih):
    csv_path, _ = nih
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="empty: no files found"):
        nih_dataset(csv_path, tmp_path / "empty")
    with pytest.raises(DataSourceError, match="nope: image folder not found"):
        nih_dataset(csv_path, tmp_path / "nope")


@pytest.mark.realdata
def test_real_nih_table():
    if not REAL_CSV.exists():
        pytest.skip(f"{REAL_CSV} is absent (it lives in ../shared next to the repository)")
    rows = read_nih_table(REAL_CSV)
    assert len(rows) == 112_120
    selected = select_nih(rows)
    labels = np.array([label for _, label in selected])
    assert np.bincount(labels).tolist() == [60_361, 322, 2_194]
    patients = np.array([row.patient_id for row, _ in selected])
    splits = patient_grouped_split(labels, patients, (0.6, 0.2, 0.2), seed=42)
    groups = [set(patients[splits == s]) for s in ("train", "val", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    for k in range(3):
        for s, f in zip(("train", "val", "test"), (0.6, 0.2, 0.2)):
            share = np.sum((labels == k) & (splits == s)) / np.sum(labels == k)
            assert abs(share - f) <= 0.02, (NIH_CLASSES[k], s, share)
