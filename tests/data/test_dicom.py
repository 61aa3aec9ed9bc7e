"""read_dicom: modality LUT, VOI (window, VOI LUT), MONOCHROME1, bit depths; write_dicom round trips."""

from __future__ import annotations

import logging

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, SecondaryCaptureImageStorage

from medrobust.data.dicom import read_dicom, write_dicom
from medrobust.data.errors import ImageReadError
from medrobust.data.io import read_image

RNG = np.random.default_rng(7)
IMAGE = RNG.random((6, 9))


def _edit(path, **attrs):
    """Re-save the DICOM at ``path`` with some attributes changed (None deletes)."""
    ds = pydicom.dcmread(path)
    for key, value in attrs.items():
        if value is None:
            del ds[key]
        else:
            setattr(ds, key, value)
    ds.save_as(path)
    return ds


def _stored(path):
    return pydicom.dcmread(path).pixel_array


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_round_trip_bit_depths(tmp_path, bits):
    path = write_dicom(tmp_path / "a.dcm", IMAGE, bits=bits)
    ds = pydicom.dcmread(path, force=False)
    assert ds.BitsStored == bits and ds.BitsAllocated == (8 if bits == 8 else 16)
    assert ds.HighBit == bits - 1
    np.testing.assert_array_equal(_stored(path), np.rint(IMAGE * ((1 << bits) - 1)))
    back = read_dicom(path)
    assert back.dtype == np.float32 and back.shape == IMAGE.shape
    assert np.abs(back - IMAGE).max() <= 0.5 / ((1 << bits) - 1) + 1e-6


def test_written_file_is_valid_secondary_capture(tmp_path):
    path = write_dicom(tmp_path / "sub" / "a.dcm", IMAGE)
    assert path.read_bytes()[128:132] == b"DICM"
    ds = pydicom.dcmread(path, force=False)
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    other = pydicom.dcmread(write_dicom(tmp_path / "b.dcm", IMAGE))
    assert other.SOPInstanceUID != ds.SOPInstanceUID


def test_rescale_slope_intercept(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", IMAGE, slope=2.0, intercept=-1024.0)
    ds = pydicom.dcmread(path)
    assert float(ds.RescaleSlope) == 2.0 and float(ds.RescaleIntercept) == -1024.0
    # Without a window the 12-bit range after rescale, [-1024, 7166], maps to [0, 1].
    np.testing.assert_array_equal(_stored(path), np.rint(IMAGE * 4095))
    assert np.abs(read_dicom(path) - IMAGE).max() <= 0.5 / 4095 + 1e-6


def test_negative_slope_is_inverted_back(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", IMAGE, slope=-1.0, intercept=4095.0)
    np.testing.assert_array_equal(_stored(path), 4095 - np.rint(IMAGE * 4095))
    assert np.abs(read_dicom(path) - IMAGE).max() <= 0.5 / 4095 + 1e-6


def test_monochrome1_is_inverted(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", IMAGE, monochrome1=True)
    assert pydicom.dcmread(path).PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_array_equal(_stored(path), 4095 - np.rint(IMAGE * 4095))
    assert np.abs(read_dicom(path) - IMAGE).max() <= 0.5 / 4095 + 1e-6


def test_monochrome1_on_raw_values(tmp_path):
    """Stored 0 on a MONOCHROME1 image is white: the reader must return 1 there."""
    path = write_dicom(tmp_path / "a.dcm", np.array([[0.0, 1.0]]), bits=8)
    _edit(path, PhotometricInterpretation="MONOCHROME1")
    np.testing.assert_allclose(read_dicom(path), [[1.0, 0.0]])


def _linear_window(x, center, width):
    c, w = center - 0.5, width - 1
    return np.clip((x - c) / w + 0.5, 0, 1)


def test_window_center_width_after_rescale(tmp_path):
    stored = np.array([[0, 500, 1000, 1500, 2000, 4095]]) / 4095
    path = write_dicom(tmp_path / "a.dcm", stored, slope=1.0, intercept=-1000.0, window=(0.0, 1000.0))
    modality = np.array([[0, 500, 1000, 1500, 2000, 4095]]) - 1000.0
    expected = _linear_window(modality, 0.0, 1000.0)
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-6)
    assert read_dicom(path)[0, 0] == 0.0 and read_dicom(path)[0, -1] == 1.0


def test_first_of_several_windows(tmp_path):
    values = np.array([[0, 1024, 2048, 3072, 4095]]) / 4095
    path = write_dicom(tmp_path / "a.dcm", values)
    _edit(path, WindowCenter=[1024, 3000], WindowWidth=[512, 2000])
    expected = _linear_window(np.array([[0, 1024, 2048, 3072, 4095]]), 1024, 512)
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-6)


def test_window_on_monochrome1_is_inverted(tmp_path):
    values = np.array([[0, 1024, 2048, 3072, 4095]]) / 4095
    path = write_dicom(tmp_path / "a.dcm", values)
    _edit(path, WindowCenter=2048, WindowWidth=2048, PhotometricInterpretation="MONOCHROME1")
    expected = 1 - _linear_window(np.array([[0, 1024, 2048, 3072, 4095]]), 2048, 2048)
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-6)


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_voi_functions(tmp_path, function):
    raw = np.array([[0, 1024, 2048, 3072, 4095]], dtype=np.float64)
    path = write_dicom(tmp_path / "a.dcm", raw / 4095, window=(2048, 1024))
    _edit(path, VOILUTFunction=function)
    if function == "LINEAR_EXACT":
        expected = np.clip((raw - 2048) / 1024 + 0.5, 0, 1)
    else:
        expected = 1 / (1 + np.exp(-4 * (raw - 2048) / 1024))
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-6)


def test_invalid_window_width(tmp_path):
    path = write_dicom(tmp_path / "bad_window.dcm", IMAGE, window=(100, 0.5))
    with pytest.raises(ImageReadError, match="bad_window.dcm.*Window Width"):
        read_dicom(path)


def _add_voi_lut(path, lut, descriptor):
    ds = pydicom.dcmread(path)
    item = pydicom.Dataset()
    item.LUTDescriptor = descriptor
    item["LUTDescriptor"].VR = "US"
    item.LUTData = [int(v) for v in lut]
    item["LUTData"].VR = "US"
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(path)


def test_voi_lut_sequence_8bit_output_over_12bit_input(tmp_path):
    raw = np.array([[0, 15, 16, 1000, 4000, 4095]])
    path = write_dicom(tmp_path / "a.dcm", raw / 4095, window=(10, 10))  # the LUT wins over the window
    lut = np.arange(4096) // 16  # 4096 entries of 8 bits
    _add_voi_lut(path, lut, [4096, 0, 8])
    np.testing.assert_allclose(read_dicom(path), lut[raw] / 255, atol=1e-6)


def test_voi_lut_first_mapped_and_clamping(tmp_path):
    raw = np.array([[0, 99, 100, 101, 102, 4095]])
    path = write_dicom(tmp_path / "a.dcm", raw / 4095)
    _add_voi_lut(path, [0, 30000, 65535], [3, 100, 16])
    expected = np.array([[0, 0, 0, 30000, 65535, 65535]]) / 65535
    np.testing.assert_allclose(read_dicom(path), expected, atol=1e-6)


def test_signed_pixels_scaled_by_signed_range(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.zeros((1, 3)), bits=16)
    values = np.array([[-32768, 0, 32767]], dtype="<i2")
    _edit(path, PixelRepresentation=1, PixelData=values.tobytes())
    np.testing.assert_allclose(read_dicom(path), [[0.0, 32768 / 65535, 1.0]], atol=1e-6)


def _with_modality_lut(path, lut, depth):
    ds = pydicom.dcmread(path)
    item = pydicom.Dataset()
    item.LUTDescriptor = [len(lut), 0, depth]
    item["LUTDescriptor"].VR = "US"
    item.LUTData = list(lut)
    item["LUTData"].VR = "US"
    ds.ModalityLUTSequence = Sequence([item])
    ds.PixelData = np.array([[0, 1, 2]], dtype="<u2").tobytes()
    ds.save_as(path)


def test_modality_lut_sequence(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.zeros((1, 3)), bits=16)
    _with_modality_lut(path, [0, 128, 255], depth=8)
    np.testing.assert_allclose(read_dicom(path), [[0.0, 128 / 255, 1.0]], atol=1e-6)


def test_values_beyond_the_implied_range_fall_back_to_min_max(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.zeros((1, 3)), bits=16)
    _with_modality_lut(path, [100, 600, 1100], depth=8)  # entries larger than the declared 8 bits
    np.testing.assert_allclose(read_dicom(path), [[0.0, 0.5, 1.0]], atol=1e-6)


def test_rgb_dicom_becomes_luma(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.zeros((2, 2)), bits=8)
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (200, 200, 200)
    _edit(path, SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0, PixelData=rgb.tobytes())
    image = read_dicom(path)
    assert image.shape == (2, 2)
    assert image[0, 0] == pytest.approx(0.299, abs=1e-6)
    assert image[1, 1] == pytest.approx(200 / 255, abs=1e-6)


def test_multiframe_takes_first_frame(tmp_path, caplog):
    path = write_dicom(tmp_path / "a.dcm", np.zeros((3, 4)), bits=8)
    frames = np.stack([np.full((3, 4), 10), np.full((3, 4), 250)]).astype(np.uint8)
    _edit(path, NumberOfFrames=2, PixelData=frames.tobytes())
    with caplog.at_level(logging.INFO, logger="medrobust.data.dicom"):
        image = read_dicom(path)
    np.testing.assert_allclose(image, 10 / 255, atol=1e-6)
    assert "2 frames" in caplog.text


def test_no_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "header_only.dcm", IMAGE)
    _edit(path, PixelData=None)
    with pytest.raises(ImageReadError, match="header_only.dcm.*no pixel data") as err:
        read_dicom(path)
    assert err.value.fix


def test_not_a_dicom(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("not a dicom file at all\n" * 10)
    with pytest.raises(ImageReadError, match="notes.dcm.*not a DICOM"):
        read_image(path)


def test_compressed_without_decoder(tmp_path):
    path = write_dicom(tmp_path / "j2k.dcm", np.zeros((4, 4)), bits=8)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51garbage" * 4])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageReadError, match="j2k.dcm.*cannot be decoded") as err:
        read_image(path)
    assert "JPEG 2000" in err.value.fix


def test_dicom_magic_without_suffix(tmp_path):
    path = write_dicom(tmp_path / "image", IMAGE)
    assert np.abs(read_image(path) - IMAGE).max() <= 0.5 / 4095 + 1e-6


def test_dicom_pixel_limit_before_decoding(tmp_path):
    path = write_dicom(tmp_path / "big.dcm", np.zeros((20, 20)))
    with pytest.raises(ImageReadError, match="big.dcm.*over the limit of 100 pixels"):
        read_image(path, max_pixels=100)


def test_write_dicom_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_dicom(tmp_path / "a.dcm", IMAGE, bits=20)
    with pytest.raises(ValueError):
        write_dicom(tmp_path / "a.dcm", IMAGE, slope=0.0)
    with pytest.raises(ValueError):
        write_dicom(tmp_path / "a.dcm", IMAGE * 2)


@pytest.mark.parametrize("bits", [1, 32])
def test_other_bit_depths(tmp_path, bits):
    from pydicom.pixels.utils import pack_bits

    path = write_dicom(tmp_path / "a.dcm", np.zeros((2, 8)), bits=8)
    top = (1 << bits) - 1
    values = np.array([[0, top] * 4, [top, 0] * 4])
    data = pack_bits(values.astype(np.uint8)) if bits == 1 else values.astype("<u4").tobytes()
    _edit(path, BitsAllocated=bits, BitsStored=bits, HighBit=bits - 1, PixelData=data)
    np.testing.assert_array_equal(read_dicom(path), values / top)


def test_palette_colour(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.zeros((1, 3)), bits=8)
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ramp = (np.arange(256) * 257).astype("<u2")  # 16-bit entries: index i -> grey i/255
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        ds[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
        setattr(ds, f"{colour}PaletteColorLookupTableData", ramp.tobytes())
    ds.PixelData = np.array([[0, 51, 255, 0]], np.uint8).tobytes()
    ds.save_as(path)
    np.testing.assert_allclose(read_dicom(path), [[0.0, 0.2, 1.0]], atol=1e-6)
