"""CT data in HU (issue 29): DICOM series read in patient order whatever the file names, rescale
applied, bad series refused naming the folder; series and NIfTI written and read back to the same
integer HU; single-slice CT on the CT grid (radiographs untouched); the head-CT phantoms."""

from __future__ import annotations

import csv
import random
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medrobust.data.ct_volume import CTVolume, axial_affine
from medrobust.data.dicom import read_dicom
from medrobust.data.dicom_series import read_dicom_series, write_dicom_series
from medrobust.data.errors import ImageReadError
from medrobust.data.nifti import read_nifti, write_nifti
from medrobust.data.phantom.ct_export import write_ct_phantom_dataset
from medrobust.data.phantom.ct_head import CT_CLASSES, ct_head_params, render_ct_head
from medrobust.data.stored_grid import CT_HU
from medrobust.models.intensity import PercentileNormalization


def _needs_nibabel() -> None:
    pytest.importorskip("nibabel", reason="NIfTI needs the ct extra (nibabel); the DICOM tests run without it")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """One small head per class, as DICOM series and NIfTI, and its manifest."""
    out = tmp_path_factory.mktemp("ct")
    try:
        import nibabel  # noqa: F401
        fmt = "both"
    except ImportError:
        fmt = "dicom"
    manifest = write_ct_phantom_dataset(out, per_class=1, size=32, depth=6, fmt=fmt, seed=3)
    with open(manifest, newline="") as fh:
        return out, list(csv.DictReader(fh))


def test_a_generated_dataset_reads_back_into_the_same_hu(phantoms):
    _needs_nibabel()
    out, rows = phantoms
    assert [r["label"] for r in rows] == list(CT_CLASSES)
    for i, row in enumerate(rows):
        expected = render_ct_head(ct_head_params(3, i, i), 32, 6)
        series, nifti = row["path"].split(";")
        from_series, from_nifti = read_dicom_series(out / series), read_nifti(out / nifti)
        assert np.array_equal(from_series.hu, expected) and np.array_equal(from_nifti.hu, expected)
        assert from_series.spacing == from_nifti.spacing == pytest.approx((80 / 6, 220 / 32, 220 / 32), abs=1e-5)
        assert 4.0 < float(row["noise_hu_measured"]) < 9.0  # the homogeneous white matter's noise, in HU
        assert abs(float(row["noise_hu_measured"]) - float(row["noise_hu"])) < 1.0


def test_the_classes_look_like_their_findings():
    for index, label in ((1, 1), (4, 1), (2, 2)):
        p = ct_head_params(0, index, label)
        clean = render_ct_head(p, 64, 16, noise=False)
        assert np.count_nonzero(clean == np.rint(p.lesion_hu)) > 10
        assert (50 <= p.lesion_hu <= 90) if label == 1 else (10 <= p.lesion_hu <= 25)
    normal = render_ct_head(ct_head_params(0, 0, 0), 64, 16, noise=False)
    assert normal.min() == -1000 and 700 <= normal.max() <= 1500  # air and skull
    assert np.array_equal(render_ct_head(ct_head_params(0, 5, 2), 32, 4), render_ct_head(ct_head_params(0, 5, 2), 32, 4))


def test_slices_are_sorted_by_position_not_by_file_name(phantoms, tmp_path):
    out, rows = phantoms
    source = out / rows[1]["path"].split(";")[0]  # the DICOM series (first in either layout)
    files = sorted(source.iterdir())
    names = [f"{random.Random(7).random():.6f}-{i}.dcm" for i in range(len(files))]
    random.Random(1).shuffle(names)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for f, name in zip(files, names):
        shutil.copy(f, shuffled / name)
    assert np.array_equal(read_dicom_series(shuffled).hu, read_dicom_series(source).hu)


def _volume(depth=5, seed=0):
    hu = np.random.default_rng(seed).integers(-1024, 3072, size=(depth, 8, 8)).astype(np.float32)
    return CTVolume(hu, axial_affine((2.5, 0.7, 0.7), origin=(-3.0, 4.0, 10.0)))


@pytest.mark.parametrize("break_it, says", [
    (lambda d: shutil.copy(next(_other_series(d).iterdir()), d / "stranger.dcm"), "holds slices of 2 series"),
    (lambda d: (d / "slice-0003.dcm").unlink(), "has a gap: 5.00 mm between slice-0002.dcm and slice-0004.dcm"),
    (lambda d: shutil.copy(d / "slice-0002.dcm", d / "copy.dcm"), "has two slices at one position"),
])
def test_a_broken_series_is_refused_naming_the_folder(tmp_path, break_it, says):
    folder = tmp_path / "series"
    write_dicom_series(folder, _volume())
    break_it(folder)
    with pytest.raises(ImageReadError) as info:
        read_dicom_series(folder)
    assert str(info.value).startswith(str(folder)) and says in str(info.value)


def _other_series(folder):
    other = folder.parent / "other"
    if not other.exists():
        write_dicom_series(other, _volume(seed=1))
    return other


def test_a_written_series_is_integer_hu_derived_new_and_keeps_the_source(tmp_path):
    write_dicom_series(tmp_path / "a", _volume())
    source = read_dicom_series(tmp_path / "a")
    adversarial = CTVolume(source.hu + 0.4 * np.sign(np.random.default_rng(2).normal(size=source.hu.shape)),
                           source.affine_lps, source.source)
    files = write_dicom_series(tmp_path / "b", adversarial)
    back = read_dicom_series(tmp_path / "b")
    assert np.array_equal(back.hu, np.clip(np.rint(adversarial.hu), -1024, 3071)) and back.spacing == (2.5, 0.7, 0.7)
    assert np.allclose(back.affine_lps, source.affine_lps)
    a, b = pydicom.dcmread(sorted((tmp_path / "a").iterdir())[0]), pydicom.dcmread(files[0])
    assert b.SeriesInstanceUID != a.SeriesInstanceUID and b.SOPInstanceUID != a.SOPInstanceUID
    assert b.StudyInstanceUID == a.StudyInstanceUID and b.FrameOfReferenceUID == a.FrameOfReferenceUID
    assert list(b.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"] and b.pixel_array.dtype == np.int16
    assert (float(b.RescaleSlope), float(b.RescaleIntercept)) == (1.0, -1024.0)


def test_nifti_round_trip_keeps_hu_affine_and_header(tmp_path):
    _needs_nibabel()
    volume = _volume()
    first = read_nifti(write_nifti(tmp_path / "v.nii.gz", volume))
    first.source["nifti_header"]["descrip"] = b"kept"
    again = read_nifti(write_nifti(tmp_path / "w.nii", first))
    assert np.array_equal(again.hu, volume.hu) and np.allclose(again.affine_lps, volume.affine_lps)
    assert again.source["nifti_header"]["descrip"].item() == b"kept"
    (tmp_path / "cut.nii").write_bytes((tmp_path / "w.nii").read_bytes()[:500])
    with pytest.raises(ImageReadError, match="cut.nii"):
        read_nifti(tmp_path / "cut.nii")


def test_a_single_ct_slice_goes_to_the_ct_grid_in_hu():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    expected_hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    hu = CT_HU.to_units(read_dicom(path).astype(np.float64))
    np.testing.assert_allclose(hu, expected_hu, atol=1e-3)  # rescale applied, no window


def test_percentile_normalisation_of_pydicom_mr_sample():
    import torch

    image = torch.from_numpy(read_dicom(get_testdata_file("MR_small.dcm"))).view(1, 1, 64, 64)
    out = PercentileNormalization(1, 99).apply(image)
    lo, hi = np.percentile(image.numpy(), [1, 99])
    assert float((out == 0).float().mean()) >= 0.01 and float((out == 1).float().mean()) >= 0.01
    np.testing.assert_allclose(out.numpy(), np.clip((image.numpy() - lo) / (hi - lo), 0, 1), atol=1e-5)


def test_medmnist_3d_volumes_are_read_on_the_8bit_grid(tmp_path):
    from medrobust.data.errors import DataSourceError
    from medrobust.data.medmnist import medmnist_dataset

    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 256, size=(n, 28, 28, 28), dtype=np.uint8)
              for s, n in (("train", 3), ("val", 1), ("test", 2))}
    arrays.update({f"{s}_labels": np.array([[k % 2] for k in range(len(arrays[f"{s}_images"]))])
                   for s in ("train", "val", "test")})
    np.savez(tmp_path / "organmnist3d.npz", **arrays)
    dataset = medmnist_dataset(tmp_path / "organmnist3d.npz", split="test")
    volume, label, name = dataset[1]
    assert volume.shape == (1, 28, 28, 28) and (label, name) == (1, "test-000001")
    assert torch_equal_grid(volume.numpy()[0], arrays["test_images"][1])
    images, labels, _ = next(dataset.batches(2))
    assert images.shape == (2, 1, 28, 28, 28)
    with pytest.raises(DataSourceError, match="3D volumes of 28x28x28 voxels, which are not resized"):
        medmnist_dataset(tmp_path / "organmnist3d.npz", split="test", size=32)


def torch_equal_grid(volume: np.ndarray, stored: np.ndarray) -> bool:
    """The volume is the file's grey levels, exactly, on the 8-bit grid."""
    from medrobust.data.stored_grid import EIGHT_BIT

    return np.array_equal(EIGHT_BIT.stored_values(volume), stored.astype(np.int32))
