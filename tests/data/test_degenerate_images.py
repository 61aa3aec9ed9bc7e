"""An image that decodes to one flat value (other than 1 x 1) is skipped and listed as degenerate,
naming the header values that flattened it where one did: a DICOM Rescale Slope of 0, an
intercept that swamps the stored values, a window far from them; otherwise the value every pixel
holds (a JPEG whose quantisation table is all zeros decodes to one grey)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image

from medrobust.data.dicom import write_dicom
from medrobust.data.errors import ImageReadError
from medrobust.data.folders import folder_dataset
from medrobust.data.io import read_image, write_png

IMAGE = np.random.default_rng(7).random((8, 8))


def _dicom(path, **header):
    write_dicom(path, IMAGE, slope=2.0, intercept=-10.0)
    ds = pydicom.dcmread(path)
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    return path


def _refusal(path) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    return str(info.value)


@pytest.mark.parametrize(("header", "named"), [
    ({"RescaleSlope": "0", "RescaleIntercept": "100"},
     "its Rescale Slope 0 and Rescale Intercept 100 map every stored value to 100"),
    ({"RescaleSlope": "1", "RescaleIntercept": "1e308"},
     "its Rescale Slope 1 and Rescale Intercept 1e308 map every stored value to 1e+308"),
    ({"WindowCenter": "1e9", "WindowWidth": "10"},
     "its Window Center 1e9 and Window Width 10 leave every pixel black"),
    ({"WindowCenter": "-1e9", "WindowWidth": "10"},
     "its Window Center -1e9 and Window Width 10 leave every pixel white"),
])
def test_dicom_flattened_by_its_header_names_the_values(tmp_path, header, named):
    path = _dicom(tmp_path / "a.dcm", **header)
    message = _refusal(path)
    assert message == (f"{path}: is degenerate: {named}, so the image has no variation at all; correct the header "
                       "or re-export the image; a blank image cannot be classified")


def test_dicom_whose_stored_pixels_are_flat_gives_the_value(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.full((8, 8), 0.5), bits=8)
    assert "is degenerate: every pixel is 0.502 (grey level 128 of 255), so the image has no variation" in _refusal(path)


def _jpeg_with_zero_quantisation(path):
    buffer = io.BytesIO()
    Image.fromarray((IMAGE * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    start = data.find(b"\xff\xdb")  # the quantisation table segment: length, then precision/id, then 64 entries
    length = int.from_bytes(data[start + 2:start + 4], "big")
    data[start + 5:start + 2 + length] = bytes(length - 3)
    path.write_bytes(bytes(data))
    return path


def test_jpeg_with_an_all_zero_quantisation_table(tmp_path):
    path = _jpeg_with_zero_quantisation(tmp_path / "a.jpg")
    assert _refusal(path) == (f"{path}: is degenerate: every pixel is 0.502 (grey level 128 of 255), so the image has "
                              "no variation at all; correct the header or re-export the image; a blank image cannot "
                              "be classified")


def test_blank_png_is_degenerate_but_one_pixel_and_a_varied_image_are_not(tmp_path):
    assert "every pixel is 0 (grey level 0 of 255)" in _refusal(write_png(tmp_path / "black.png", np.zeros((4, 4))))
    assert read_image(write_png(tmp_path / "dot.png", np.ones((1, 1)))).tolist() == [[1.0]]
    image = np.zeros((4, 4))
    image[3, 3] = 1 / 255  # one grey level of difference is variation
    assert read_image(write_png(tmp_path / "faint.png", image)).max() == pytest.approx(1 / 255)


def test_a_folder_lists_degenerate_images_and_reads_the_rest(tmp_path):
    root = tmp_path / "tree"
    (root / "Normal").mkdir(parents=True)
    (root / "Pneumonia").mkdir()
    _dicom(root / "Normal" / "slope0.dcm", RescaleSlope="0")
    write_dicom(root / "Normal" / "good.dcm", IMAGE)
    _jpeg_with_zero_quantisation(root / "Pneumonia" / "grey.jpg")
    write_png(root / "Pneumonia" / "good.png", IMAGE)
    dataset = folder_dataset(root)
    _, _, ids = dataset.load()
    assert ids == ["Normal/good.dcm", "Pneumonia/good.png"]
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in dataset.skipped}
    assert sorted(reasons) == ["grey.jpg", "slope0.dcm"]
    assert reasons["slope0.dcm"].startswith("is degenerate: its Rescale Slope 0 and Rescale Intercept -10")
    assert reasons["grey.jpg"].startswith("is degenerate: every pixel is 0.502")
