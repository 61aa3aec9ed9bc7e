"""Bad files: each gives one clear message naming the file, and datasets skip it and go on."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from medrobust.data.dataset import FileImageDataset, ImageRecord
from medrobust.data.dicom import write_dicom
from medrobust.data.errors import ImageReadError
from medrobust.data.folders import folder_dataset
from medrobust.data.io import read_image
from medrobust.data.nih import nih_dataset


def _png_bytes(size=(8, 8), value=100) -> bytes:
    """A PNG of ``value`` but for its first pixel (one flat value is skipped as degenerate)."""
    buffer = io.BytesIO()
    pixels = np.full(size, value, np.uint8)
    pixels[0, 0] = 255 - value
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _noisy_png_bytes(size=(10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (10, 10), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _corrupt_crc(data: bytes) -> bytes:
    at = data.index(b"IDAT") + 8
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def _make(kind: str, folder: Path) -> tuple[Path, str]:
    """Write one bad file of ``kind`` into ``folder``; return its path and a phrase of the expected message."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "truncated_png":
        path = folder / "truncated.png"
        data = _noisy_png_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, "truncated or corrupt"
    if kind == "corrupt_png":
        path = folder / "corrupt.png"
        path.write_bytes(_corrupt_crc(_noisy_png_bytes()))
        return path, "truncated or corrupt"
    if kind == "truncated_jpeg":
        path = folder / "cut.jpg"
        data = _jpeg_bytes()
        path.write_bytes(data[: data.index(b"\xff\xda") + 20])  # cut inside the scan data
        return path, "truncated or corrupt"
    if kind == "empty":
        path = folder / "empty.png"
        path.write_bytes(b"")
        return path, "empty (0 bytes)"
    if kind == "text":
        path = folder / "notes.png"
        path.write_text("this is a text file with a .png name\n")
        return path, "not an image"
    if kind == "too_large":
        path = folder / "large.png"
        path.write_bytes(_png_bytes(size=(20, 20)))
        return path, "over the limit of 100 pixels"
    if kind == "no_pixel_data":
        path = write_dicom(folder / "header_only.dcm", np.zeros((4, 4)))
        ds = pydicom.dcmread(path)
        del ds.PixelData
        ds.save_as(path)
        return path, "no pixel data"
    if kind == "not_dicom":
        path = folder / "fake.dcm"
        path.write_text("plain text pretending to be DICOM\n" * 8)
        return path, "not a DICOM"
    if kind == "malformed_dicom_header":
        path = write_dicom(folder / "bad_header.dcm", np.zeros((4, 4)), window=(10, 10))
        data = path.read_bytes().replace(b"\x28\x00\x50\x10DS\x02\x0010", b"\x28\x00\x50\x10DS\x02\x00ab")
        path.write_bytes(data)
        return path, "malformed image header"
    raise AssertionError(kind)


BAD_KINDS = [
    "truncated_png", "corrupt_png", "truncated_jpeg", "empty", "text", "too_large",
    "no_pixel_data", "not_dicom", "malformed_dicom_header",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_each_bad_file_names_itself(tmp_path, kind):
    path, phrase = _make(kind, tmp_path)
    with pytest.raises(ImageReadError) as err:
        read_image(path, max_pixels=100)
    message = str(err.value)
    assert path.name in message
    assert phrase in message
    assert err.value.fix, "every message carries a fix"
    assert err.value.path == str(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="gone.png: file does not exist"):
        read_image(tmp_path / "gone.png")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(tmp_path)


@pytest.mark.parametrize(
    "name, array, phrase",
    [
        ("float_range.tif", np.array([[0.0, 2.5]], np.float32), r"outside \[0, 1\]"),
        ("float_nan.tif", np.array([[0.0, np.nan]], np.float32), r"outside \[0, 1\]"),
        ("int32.tif", np.array([[0, 70000]], np.int32), "outside the 16-bit range"),
        ("negative.tif", np.array([[-5, 10]], np.int32), "outside the 16-bit range"),
    ],
)
def test_unsupported_pixel_formats(tmp_path, name, array, phrase):
    path = tmp_path / name
    Image.fromarray(array).save(path)
    with pytest.raises(ImageReadError, match=phrase) as err:
        read_image(path)
    assert name in str(err.value)


def test_unsupported_mode(tmp_path):
    path = tmp_path / "colour.tif"
    Image.new("LAB", (4, 4)).save(path)
    with pytest.raises(ImageReadError, match="colour.tif: has pixel mode 'LAB'") as err:
        read_image(path)
    assert "export it as an 8- or 16-bit grayscale PNG" in str(err.value)


def test_pillow_decompression_bomb_is_reported(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bytes(size=(20, 20)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # Pillow refuses > 2x this; restored after the test
    with pytest.raises(ImageReadError, match="bomb.png.*decompression bomb"):
        read_image(path, max_pixels=10_000)


def test_folder_dataset_skips_bad_files_and_uses_the_rest(tmp_path, caplog):
    root = tmp_path / "tree"
    good = []
    for i in range(3):
        path = root / "Normal" / f"good{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png_bytes(value=10 * i))
        good.append(path)
    bad = [_make(kind, root / "Pneumonia")[0] for kind in BAD_KINDS]
    (root / "Pneumonia" / "ok.png").write_bytes(_png_bytes())

    ds = folder_dataset(root, max_pixels=100)
    assert len(ds) == 4 + len(bad)
    with caplog.at_level(logging.WARNING, logger="medrobust.data.dataset"):
        ids = [item_id for _, _, batch_ids in ds.batches(batch_size=2) for item_id in batch_ids]
    assert ids == ["Normal/good0.png", "Normal/good1.png", "Normal/good2.png", "Pneumonia/ok.png"]
    assert sorted(Path(s.path).name for s in ds.skipped) == sorted(p.name for p in bad)
    summary = ds.skipped_summary()
    assert summary.startswith(f"{len(bad)} file(s) skipped")
    for path in bad:
        assert path.name in summary
        assert path.name in caplog.text


def test_load_skips_unsupported_and_missing_files(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(_png_bytes(size=(2, 2)))
    float_tif = tmp_path / "wide_range.tif"
    Image.fromarray(np.array([[0.0, 3.0], [1.0, 2.0]], np.float32)).save(float_tif)
    records = [
        ImageRecord(label=0, id="good", path=good),
        ImageRecord(label=1, id="wide", path=float_tif),
        ImageRecord(label=1, id="gone", path=tmp_path / "gone.png"),
    ]
    ds = FileImageDataset(records, ["a", "b"])
    images, labels, ids = ds.load()
    assert ids == ["good"] and images.shape == (1, 1, 2, 2)
    assert [Path(s.path).name for s in ds.skipped] == ["wide_range.tif", "gone.png"]
    assert "wide_range.tif" in ds.skipped_summary() and "gone.png" in ds.skipped_summary()


def test_nih_rows_pointing_at_missing_files(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
        "00000001_000.png,No Finding,0,1,50,F,PA,8,8,0.1,0.1\n"
        "00000002_000.png,Pneumonia,0,2,50,F,PA,8,8,0.1,0.1\n"
        "00000003_000.png,Pneumothorax,0,3,50,F,PA,8,8,0.1,0.1\n"
        "00000004_000.png,Pneumothorax,0,4,50,F,PA,8,8,0.1,0.1\n"
    )
    images = tmp_path / "images_001" / "images"
    images.mkdir(parents=True)
    for name in ("00000001_000.png", "00000002_000.png", "00000003_000.png"):
        (images / name).write_bytes(_png_bytes())
    (images / "00000003_000.png").write_bytes(b"")  # present but empty: skipped when read

    ds = nih_dataset(csv_path, tmp_path, fractions=None)
    assert [s.path for s in ds.skipped] == ["00000004_000.png"]
    assert "labels.csv" in ds.skipped[0].reason
    _, _, ids = ds.load()
    assert ids == ["00000001_000.png", "00000002_000.png"]
    summary = ds.skipped_summary()
    assert "00000004_000.png" in summary and "00000003_000.png" in summary
