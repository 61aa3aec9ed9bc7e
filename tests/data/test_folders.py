"""Class-per-folder trees: discovery, ordering, class lists, split folders, split fractions."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from medrobust.data.dicom import write_dicom
from medrobust.data.errors import DataSourceError
from medrobust.data.folders import folder_dataset


def _png(path, value=128, size=(8, 8)):
    """An image of ``value`` but for its first pixel (one flat value would be skipped as degenerate)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image_format = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    pixels = np.full(size, value, np.uint8)
    pixels[0, 0] = 255 - value
    Image.fromarray(pixels).save(path, format=image_format)
    return path


@pytest.fixture
def flat_tree(tmp_path):
    root = tmp_path / "tree"
    _png(root / "Normal" / "b.png", 10)
    _png(root / "Normal" / "a.PNG", 20)
    _png(root / "Normal" / "sub" / "c.jpg", 30)
    write_dicom(root / "Normal" / "d.dcm", np.linspace(0, 1, 64).reshape(8, 8), bits=8)
    _png(root / "Pneumonia" / "x.jpeg", 40)
    _png(root / "Pneumonia" / ".hidden.png", 50)
    _png(root / "Pneumonia" / ".cache" / "y.png", 60)
    (root / "Pneumonia" / "notes.txt").write_text("not an image")
    _png(root / ".git" / "z.png")
    _png(root / "__MACOSX" / "Normal" / "w.png")
    (root / "README.txt").write_text("top-level file, ignored")
    return root


def test_flat_layout(flat_tree):
    ds = folder_dataset(flat_tree)
    assert ds.classes == ["Normal", "Pneumonia"]
    assert [r.id for r in ds.records] == [
        "Normal/a.PNG", "Normal/b.png", "Normal/d.dcm", "Normal/sub/c.jpg", "Pneumonia/x.jpeg",
    ]
    assert [r.label for r in ds.records] == [0, 0, 0, 0, 1]
    assert all(r.split is None for r in ds.records)
    assert all(r.path is not None and r.path.is_file() for r in ds.records)
    images, labels, ids = ds.load()
    assert images.shape == (5, 1, 8, 8)
    assert ids[0] == "Normal/a.PNG"
    assert images[0, 0, -1, -1].item() == pytest.approx(20 / 255, abs=1e-6)
    assert labels.tolist() == [0, 0, 0, 0, 1]


def test_given_classes_fix_order_and_ignore_extra_folders(flat_tree, caplog):
    _png(flat_tree / "Other" / "o.png")
    with caplog.at_level(logging.INFO, logger="medrobust.data.folders"):
        ds = folder_dataset(flat_tree, classes=["Pneumonia", "Normal"])
    assert ds.classes == ["Pneumonia", "Normal"]
    assert ds.class_counts() == {"Pneumonia": 1, "Normal": 4}
    assert "Other" in caplog.text


def test_missing_class_folder_is_named(flat_tree):
    with pytest.raises(DataSourceError, match="Pneumothorax: class folder not found"):
        folder_dataset(flat_tree, classes=["Normal", "Pneumothorax"])
    with pytest.raises(DataSourceError, match="normal"):
        folder_dataset(flat_tree, classes=["normal"])  # case-sensitive


def test_empty_class_folder(tmp_path):
    _png(tmp_path / "A" / "a.png")
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "readme.md").write_text("no images")
    with pytest.raises(DataSourceError, match="B: class folder holds no image files"):
        folder_dataset(tmp_path)


def test_missing_root_and_no_class_folders(tmp_path):
    with pytest.raises(DataSourceError, match="nowhere: folder not found"):
        folder_dataset(tmp_path / "nowhere")
    with pytest.raises(DataSourceError, match="no class folders"):
        folder_dataset(tmp_path)


def test_split_folders(tmp_path):
    for split, n in (("train", 3), ("Valid", 2), ("test", 1)):
        for cls in ("A", "B"):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png")
    ds = folder_dataset(tmp_path, split=(0.5, 0.25, 0.25))  # fractions ignored: folders decide
    assert ds.classes == ["A", "B"]
    splits = [r.split for r in ds.records]
    assert splits.count("train") == 6 and splits.count("val") == 4 and splits.count("test") == 2
    assert ds.records[0].id == "train/A/0.png"
    assert {name: len(sub) for name, sub in ds.splits().items()} == {"train": 6, "val": 4, "test": 2}


def test_split_folders_with_class_missing_in_one_split(tmp_path, caplog):
    _png(tmp_path / "train" / "A" / "a.png")
    _png(tmp_path / "train" / "B" / "b.png")
    _png(tmp_path / "test" / "A" / "c.png")
    with caplog.at_level(logging.WARNING):
        ds = folder_dataset(tmp_path)
    assert [(r.id, r.split) for r in ds.records] == [("train/A/a.png", "train"), ("train/B/b.png", "train"),
                                                     ("test/A/c.png", "test")]
    assert "no 'B' folder" in caplog.text


def test_two_folders_for_one_split(tmp_path):
    _png(tmp_path / "val" / "A" / "a.png")
    _png(tmp_path / "validation" / "A" / "b.png")
    with pytest.raises(DataSourceError, match="keep only one"):
        folder_dataset(tmp_path)


def test_stratified_split_fractions(tmp_path):
    for cls, n in (("A", 10), ("B", 5)):
        for i in range(n):
            _png(tmp_path / cls / f"{i:02d}.png")
    ds = folder_dataset(tmp_path, split=(0.6, 0.2, 0.2), seed=42)
    assert all(r.split in ("train", "val", "test") for r in ds.records)
    by = lambda k, s: sum(1 for r in ds.records if r.label == k and r.split == s)  # noqa: E731
    assert [by(0, s) for s in ("train", "val", "test")] == [6, 2, 2]
    assert [by(1, s) for s in ("train", "val", "test")] == [3, 1, 1]
    again = folder_dataset(tmp_path, split=(0.6, 0.2, 0.2), seed=42)
    assert [r.split for r in again.records] == [r.split for r in ds.records]


def test_size_resizes(flat_tree):
    ds = folder_dataset(flat_tree, size=4)
    images, _, _ = ds.load()
    assert images.shape == (5, 1, 4, 4)
