"""A file whose pixels decode to NaN or infinity is refused like a truncated one, never
classified: read_image raises, a dataset skips and lists it."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medrobust.data.dicom import write_dicom
from medrobust.data.errors import ImageReadError
from medrobust.data.folders import folder_dataset
from medrobust.data.io import read_image, write_png

# pydicom warns that 'inf' is not a valid DS value while writing and reading the test files.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR DS:UserWarning")

IMAGE = np.random.default_rng(3).random((8, 8))


def dicom_with(path, **header):
    """A valid 12-bit DICOM at ``path``, then re-saved with ``header`` values (strings as in the file)."""
    write_dicom(path, IMAGE, slope=2.0, intercept=-10.0)
    ds = pydicom.dcmread(path)
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    return path


@pytest.mark.parametrize(("keyword", "value", "named"), [
    ("RescaleSlope", "inf", "Rescale Slope"),
    ("RescaleIntercept", "nan", "Rescale Intercept"),
    ("WindowWidth", "inf", "Window Width"),  # a flat grey image, not NaN, without the check
    ("WindowCenter", "-inf", "Window Center"),
])
def test_non_finite_dicom_header_value_is_refused_by_name(tmp_path, keyword, value, named):
    header = {keyword: value}
    if keyword.startswith("Window"):
        header = {"WindowCenter": "100", "WindowWidth": "200", **header}
    path = dicom_with(tmp_path / "a.dcm", **header)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message and named in message and "not a finite number" in message
    assert "correct the" in message  # the fix


def test_overflowing_rescale_is_caught_after_decoding(tmp_path):
    # A finite slope whose products overflow: 4095 * 1e308 is inf, and the scaling then gives NaN.
    path = dicom_with(tmp_path / "a.dcm", RescaleSlope="1e308", RescaleIntercept="0")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message and "pixels are not finite numbers" in message
    assert "Rescale" in message and "re-export" in message
    nan_count = int(message.split(" of ")[0].split(": ")[-1].replace(",", ""))
    assert 1 <= nan_count <= IMAGE.size


def test_any_decoder_returning_nan_is_refused_with_the_count(tmp_path, monkeypatch):
    import medrobust.data.dicom as dicom

    path = write_dicom(tmp_path / "a.dcm", IMAGE)
    poisoned = IMAGE.astype(np.float32)
    poisoned[0, :3] = np.nan
    monkeypatch.setattr(dicom, "read_dicom", lambda *args, **kwargs: poisoned)
    with pytest.raises(ImageReadError, match=r"3 of 64 pixels are not finite numbers"):
        read_image(path)


def test_folder_dataset_skips_and_lists_the_nan_dicom(tmp_path):
    for name in ("Normal", "Pneumonia"):
        write_png(tmp_path / name / "ok.png", IMAGE)
    bad = dicom_with(tmp_path / "Normal" / "bad.dcm", RescaleSlope="inf")
    dataset = folder_dataset(tmp_path, size=8)
    x, _, ids = dataset.load()
    assert sorted(ids) == ["Normal/ok.png", "Pneumonia/ok.png"]
    assert bool(np.isfinite(x.numpy()).all())
    assert [s.path for s in dataset.skipped] == [str(bad)]
    assert "Rescale Slope" in dataset.skipped[0].reason
