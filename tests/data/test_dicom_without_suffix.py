"""DICOM files are recognised by their content (``DICM`` at byte 128), not only by a ``.dcm``
suffix: clinical exports name files ``IM000123`` or by their UID. One function decides what is
an image file (:func:`medrobust.data.io.is_image_file`) for folders and file lists alike; odd
files keep being ignored, and a file that only looks like DICOM is listed with its reason."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import medrobust as mr
from medrobust.data.dicom import write_dicom
from medrobust.data.folders import folder_dataset, unlabelled_images
from medrobust.data.io import is_image_file, read_image

IMAGE = np.random.default_rng(5).random((12, 12))


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((IMAGE * 255).astype(np.uint8)).save(path, format="PNG")
    return path


def _odd_files(folder):
    """A suffix-less DICOM, a UID-named one, and the odd files a real export folder holds."""
    folder.mkdir(parents=True, exist_ok=True)
    write_dicom(folder / "IM000001", IMAGE)
    write_dicom(folder / "1.2.840.113619.2.55.3.320", IMAGE)
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + b"\0" * 200)
    (folder / "notes.txt").write_text("reading notes")
    (folder / "empty").write_bytes(b"")
    (folder / "garbage").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 2)


def test_is_image_file_reads_the_marker_only_for_other_names(tmp_path, monkeypatch):
    _odd_files(tmp_path)
    assert is_image_file(tmp_path / "IM000001") and is_image_file(tmp_path / "1.2.840.113619.2.55.3.320")
    assert is_image_file(tmp_path / "garbage")  # it claims to be DICOM: the reader says what is wrong
    assert not is_image_file(tmp_path / "notes.txt") and not is_image_file(tmp_path / "empty")
    assert not is_image_file(tmp_path / "missing") and not is_image_file(tmp_path)
    os.mkfifo(tmp_path / "pipe")  # opening a FIFO would block: never opened
    assert not is_image_file(tmp_path / "pipe")
    # A name with an image suffix is decided without opening the file (cheap on big folders).
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert is_image_file(tmp_path / "a.PNG") and is_image_file(tmp_path / "b.dcm") and opened == []
    assert is_image_file(tmp_path / "any", head=lambda: b"\0" * 128 + b"DICM") and opened == []
    assert not is_image_file(tmp_path / "notes.txt", head=lambda: b"text") and opened == []


def test_a_class_folder_of_suffix_less_dicom_is_read(tmp_path):
    root = tmp_path / "export"
    _odd_files(root / "Normal")
    _png(root / "Pneumonia" / "p.png")
    dataset = folder_dataset(root)
    assert [r.id for r in dataset.records] == ["Normal/1.2.840.113619.2.55.3.320", "Normal/IM000001",
                                              "Normal/garbage", "Pneumonia/p.png"]
    images, labels, ids = dataset.load()
    assert ids == ["Normal/1.2.840.113619.2.55.3.320", "Normal/IM000001", "Pneumonia/p.png"]
    np.testing.assert_allclose(images[1, 0].numpy(), read_image(root / "Normal" / "IM000001"))
    assert np.abs(images[1, 0].numpy() - IMAGE).max() < 1 / 4095  # the 12-bit DICOM as written
    assert [s.path for s in dataset.skipped] == [str(root / "Normal" / "garbage")]
    assert "has no pixel data" in dataset.skipped[0].reason


def test_predict_and_detect_lists_take_suffix_less_dicom(tmp_path):
    folder = tmp_path / "incoming"
    _odd_files(folder)
    unlabelled = unlabelled_images([folder])
    assert sorted(r.id for r in unlabelled.records) == ["1.2.840.113619.2.55.3.320", "IM000001", "garbage"]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 2))
    model = mr.load_model(net, classes=["Normal", "Pneumonia"], network_channels=1)
    predictions = mr.predict(model, str(folder))
    assert sorted(predictions.ids) == ["1.2.840.113619.2.55.3.320", "IM000001"]
    assert len(predictions.skipped) == 1 and predictions.skipped[0].startswith(f"{folder / 'garbage'}: has no pixel data")
    # a file named on the command line is read whatever its name
    single = mr.predict(model, [str(folder / "IM000001")])
    assert single.ids == ["IM000001"] and not single.skipped


@pytest.mark.parametrize("name", ["IM000001", "scan.DCM"])
def test_open_images_sees_class_folders_of_dicom(tmp_path, name):
    root = tmp_path / "data"
    (root / "Normal").mkdir(parents=True)
    write_dicom(root / "Normal" / name, IMAGE)
    _png(root / "Pneumonia" / "p.png")
    images = mr.open_images(str(root))
    assert images.labelled and images.classes == ["Normal", "Pneumonia"] and len(images) == 2
