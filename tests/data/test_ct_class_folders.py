"""CT as class data (issue 29, the run): a class folder of DICOM series folders (file names
shuffled) and NIfTI files reads as volumes in HU on the CT grid; a broken series (mixed, a gap, a
duplicate slice, a truncated slice) is skipped with its reason and the rest reads; a tree of CT and
8-bit images is refused; the noise estimate and the phantoms' noise figure."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest

from medrobust.data.errors import DataSourceError
from medrobust.data.folders import folder_dataset
from medrobust.data.noise_estimate import estimate_noise_std, manifest_noise_std
from medrobust.data.phantom.ct_export import write_ct_phantom_dataset
from medrobust.data.phantom.ct_head import ct_head_params, render_ct_head
from medrobust.data.stored_grid import CT_HU, EIGHT_BIT

SIZE, DEPTH, SEED = 16, 5, 4


def _shuffle_names(series, rng: random.Random) -> None:
    """Rename every slice of a series folder to a random name without suffix (as PACS exports do)."""
    for path in sorted(series.iterdir()):
        path.rename(series / f"IM{rng.randrange(10**8):08d}")


@pytest.fixture(scope="module")
def ct_tree(tmp_path_factory):
    """Two heads per class as series folders with shuffled slice names, plus four broken series."""
    root = tmp_path_factory.mktemp("ct_tree")
    write_ct_phantom_dataset(root, per_class=2, size=SIZE, depth=DEPTH, fmt="dicom", seed=SEED)
    rng = random.Random(0)
    series = sorted(p for p in root.glob("*/ct-*") if p.is_dir())
    for folder in series:
        _shuffle_names(folder, rng)
    normal = root / "normal"
    donors = sorted(p for p in (normal / "ct-000000").iterdir())
    _remove_middle_slice(shutil.copytree(normal / "ct-000000", normal / "broken-gap"))
    dup = shutil.copytree(normal / "ct-000000", normal / "broken-duplicate")
    shutil.copy(donors[0], dup / "copy-of-a-slice")
    mixed = shutil.copytree(normal / "ct-000000", normal / "broken-mixed")
    shutil.copy(sorted((root / "infarct" / "ct-000002").iterdir())[0], mixed / "from-another-series")
    truncated = shutil.copytree(normal / "ct-000000", normal / "broken-truncated")
    victim = sorted(truncated.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-200])
    return root


def _remove_middle_slice(folder) -> None:
    """A gap: the middle slice by position removed (the shuffled names say nothing of the order)."""
    import pydicom

    by_z = sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    by_z[len(by_z) // 2].unlink()


def test_series_folders_read_as_volumes_in_hu_whatever_the_file_names(ct_tree):
    dataset = folder_dataset(ct_tree)
    assert dataset.grid == CT_HU and dataset.classes == ["haemorrhage", "infarct", "normal"]
    ids = [r.id for r in dataset.records]
    assert "normal/ct-000000" in ids and "normal/broken-gap" in ids and len(ids) == 6 + 4
    x, labels, read_ids = dataset.load(batch_size=4)
    assert x.shape == (6, 1, DEPTH, SIZE, SIZE) and x.dtype.is_floating_point
    assert sorted(read_ids) == sorted(i for i in ids if "broken" not in i)
    for k, record_id in enumerate(read_ids):  # the volume is the generated head, slice order and HU exact
        index = int(record_id.rsplit("-", 1)[1])
        label = ("normal", "haemorrhage", "infarct").index(record_id.split("/")[0])
        expected = render_ct_head(ct_head_params(SEED, index, label), SIZE, DEPTH)
        assert np.array_equal(np.rint(CT_HU.to_units(x[k, 0].numpy().astype(np.float64))), expected)


def test_a_broken_series_is_skipped_with_its_reason(ct_tree):
    dataset = folder_dataset(ct_tree)
    list(dataset.batches(4))
    reasons = {str(s.path).rsplit("/", 1)[-1]: s.reason for s in dataset.skipped}
    assert set(reasons) == {"broken-gap", "broken-duplicate", "broken-mixed", "broken-truncated"}, reasons
    assert "gap" in reasons["broken-gap"]
    assert "two slices at one position" in reasons["broken-duplicate"]
    assert "2 series" in reasons["broken-mixed"]
    assert reasons["broken-truncated"].startswith("slice IM") and "cannot be decoded" in reasons["broken-truncated"]


def test_a_tree_of_ct_and_8_bit_images_is_refused(ct_tree, tmp_path):
    from medrobust.data.io import write_png

    mixed = tmp_path / "mixed"
    shutil.copytree(ct_tree / "normal" / "ct-000000", mixed / "normal" / "ct-000000")
    write_png(mixed / "abnormal" / "a.png", np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8))
    with pytest.raises(DataSourceError, match="both CT in HU .* and 8-bit images"):
        folder_dataset(mixed)
    only_png = tmp_path / "png"
    shutil.copytree(mixed / "abnormal", only_png / "abnormal")
    assert folder_dataset(only_png).grid == EIGHT_BIT


def test_nifti_files_are_volumes_of_a_class_folder(tmp_path):
    pytest.importorskip("nibabel")
    write_ct_phantom_dataset(tmp_path, per_class=1, size=SIZE, depth=DEPTH, fmt="nifti", seed=SEED)
    dataset = folder_dataset(tmp_path)
    x, _, ids = dataset.load()
    assert dataset.grid == CT_HU and x.shape == (3, 1, DEPTH, SIZE, SIZE)
    assert all(i.endswith(".nii.gz") for i in ids)


def test_the_noise_figure_is_the_manifest_s_and_the_estimate_is_near_it(ct_tree):
    manifest = manifest_noise_std(ct_tree)
    assert manifest is not None and 5.0 < manifest < 8.5
    heads = np.stack([render_ct_head(ct_head_params(SEED, i, i % 3), 48, 6) for i in range(3)])
    noise = np.median([ct_head_params(SEED, i, i % 3).noise_hu for i in range(3)])
    estimate = estimate_noise_std(heads)
    assert estimate is not None and abs(estimate - noise) < 0.25 * noise  # an estimate: within 25% on white noise
    assert estimate_noise_std(np.full((4, 16, 16), -1000.0)) is None  # no soft tissue: not measured
