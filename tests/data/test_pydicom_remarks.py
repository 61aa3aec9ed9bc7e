"""pydicom's remarks on a file (a decoder's failure logged with its traceback, warnings that are
also logged, exception messages with a traceback pasted in) never reach the terminal: while a
file is read they are captured, and become part of its one-line skip reason when it cannot be
read, or one per-image log line when it can."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import JPEGBaseline8Bit

from medrobust.data.dicom import write_dicom
from medrobust.data.errors import ImageReadError
from medrobust.data.io import read_image
from medrobust.logs.per_image_log import PER_IMAGE_LOGGER

IMAGE = np.random.default_rng(2).random((16, 16))


def _broken_jpeg_dicom(path):
    """A JPEG Baseline DICOM whose compressed frame is garbage: pydicom's Pillow decoder fails and
    pydicom logs the failure with ``LOGGER.exception`` (a whole traceback)."""
    write_dicom(path, IMAGE, bits=8)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0garbagegarbage\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    return path


def _root_records(caplog):
    return [r for r in caplog.records if r.name.startswith("pydicom")]


def test_a_decoder_failure_is_one_line_and_logs_no_traceback(tmp_path, caplog):
    path = _broken_jpeg_dicom(tmp_path / "a.dcm")
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escaped would fail the test
        with pytest.raises(ImageReadError) as info:
            read_image(path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"{path}: pixel data cannot be decoded (RuntimeError: Unable to decode as exceptions "
                              "were raised by all available plugins: pillow: ")
    assert _root_records(caplog) == [] and "Traceback" not in caplog.text


def _implicit_vr_dataset(path):
    """A DICOM whose file meta says Explicit VR while its dataset is written Implicit VR: pydicom
    reads it, warning and logging "Expected explicit VR, but found implicit VR"."""
    write_dicom(path, IMAGE)
    ds = pydicom.dcmread(path)
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    plain = pydicom.Dataset()
    for element in ds:
        plain.add(element)
    write_dataset(body, plain)
    path.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + body.getvalue())
    return path


def test_warnings_of_a_readable_file_become_one_per_image_line(tmp_path, caplog):
    path = _implicit_vr_dataset(tmp_path / "a.dcm")
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_image(path)
    assert np.abs(image - IMAGE).max() < 1 / 4095
    assert _root_records(caplog) == []
    lines = [r.getMessage() for r in caplog.records if r.name == PER_IMAGE_LOGGER]
    assert lines == [f"{path}: read, with pydicom's remarks: Expected explicit VR, but found implicit VR - using "
                     "implicit VR for reading"]  # logged and warned by pydicom: said once


def test_remarks_join_the_skip_reason_once(tmp_path, caplog):
    path = tmp_path / "odd.dcm"
    write_dicom(path, IMAGE)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"\x28\x00\x10\x00US\x02\x00")  # Rows, written as an attribute tag (AT) of 2 bytes
    raw[at + 4:at + 6] = b"AT"
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageReadError) as info:
            read_image(path)
    message = str(info.value)
    assert message.count("Expected length to be multiple of 4 for VR 'AT', got length 2") == 1  # logged and warned
    assert "(pydicom: Expected length" in message and _root_records(caplog) == []


def test_a_traceback_inside_an_exception_message_is_cut(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "a.dcm", IMAGE)

    def fails(*args, **kwargs):
        raise ValueError("With tag (0028,0010) got exception: bad value\nTraceback (most recent call last):\n"
                         '  File "x.py", line 1, in f\nValueError: bad value\n')

    monkeypatch.setattr(pydicom.pixels, "pixel_array", fails)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(info.value) == (f"{path}: pixel data cannot be decoded (ValueError: With tag (0028,0010) got exception: "
                               "bad value); re-export it as an uncompressed DICOM or as a 16-bit PNG")


def test_pydicom_logs_normally_outside_a_read(tmp_path, caplog):
    read_image(write_dicom(tmp_path / "a.dcm", IMAGE))  # installs the capture on pydicom's loggers
    with caplog.at_level(logging.WARNING, logger="pydicom"):
        logging.getLogger("pydicom").warning("a remark outside any read")
    assert "a remark outside any read" in caplog.text
