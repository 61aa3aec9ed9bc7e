"""MedMNIST .npz loading: splits, ids, class names, colour sets, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from medrobust.data.errors import DataSourceError
from medrobust.data.medmnist import medmnist_dataset

SIZES = {"train": 6, "val": 2, "test": 3}


def _arrays(colour=False, n_classes=3, multilabel=False):
    rng = np.random.default_rng(0)
    out = {}
    for split, n in SIZES.items():
        shape = (n, 4, 4, 3) if colour else (n, 4, 4)
        out[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        if multilabel:
            out[f"{split}_labels"] = rng.integers(0, 2, (n, 14), dtype=np.uint8)
        else:
            out[f"{split}_labels"] = (np.arange(n) % n_classes).reshape(n, 1).astype(np.uint8)
    return out


@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "pneumoniamnist.npz"
    np.savez_compressed(path, **_arrays())
    return path


def test_all_splits(npz):
    ds = medmnist_dataset(npz)
    assert len(ds) == 11
    assert ds.classes == ["class0", "class1", "class2"]
    assert [r.id for r in ds.records][:2] == ["train-000000", "train-000001"]
    assert ds.records[6].id == "val-000000" and ds.records[6].split == "val"
    assert {name: len(sub) for name, sub in ds.splits().items()} == SIZES
    images, labels, ids = ds.load()
    arrays = _arrays()
    np.testing.assert_allclose(images[:6, 0].numpy(), arrays["train_images"] / 255, atol=1e-6)
    assert labels[:6].tolist() == [0, 1, 2, 0, 1, 2]
    assert ids[-1] == "test-000002"


def test_one_split_with_names_and_size(npz):
    ds = medmnist_dataset(npz, split="test", classes=["normal", "pneumonia", "other"], size=8)
    assert len(ds) == 3 and ds.classes == ["normal", "pneumonia", "other"]
    assert all(r.split == "test" for r in ds.records)
    images, _, _ = ds.load()
    assert images.shape == (3, 1, 8, 8)


def test_class_count_comes_from_the_whole_file(tmp_path):
    arrays = _arrays()
    arrays["test_labels"] = np.zeros((3, 1), np.uint8)
    arrays["train_labels"][0] = 4
    path = tmp_path / "a.npz"
    np.savez(path, **arrays)
    assert medmnist_dataset(path, split="test").classes == [f"class{k}" for k in range(5)]


def test_colour_set_becomes_luma(tmp_path):
    arrays = _arrays(colour=True)
    path = tmp_path / "pathmnist.npz"
    np.savez(path, **arrays)
    ds = medmnist_dataset(path, split="train")
    rgb = arrays["train_images"].astype(np.float64)
    luma = np.rint(rgb @ np.array([0.299, 0.587, 0.114])) / 255
    np.testing.assert_allclose(ds.load()[0][:, 0].numpy(), luma, atol=1e-6)


def test_multilabel_refused(tmp_path):
    path = tmp_path / "chestmnist.npz"
    np.savez(path, **_arrays(multilabel=True))
    with pytest.raises(DataSourceError, match="chestmnist.npz.*multi-label.*not support"):
        medmnist_dataset(path)


def test_missing_key_named(tmp_path):
    arrays = _arrays()
    del arrays["val_images"]
    path = tmp_path / "partial.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataSourceError, match="partial.npz: key 'val_images' is missing"):
        medmnist_dataset(path)
    assert len(medmnist_dataset(path, split="train")) == 6


def test_bad_files(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(DataSourceError, match="notes.npz: cannot be read"):
        medmnist_dataset(text)
    with pytest.raises(DataSourceError, match="absent.npz: file not found"):
        medmnist_dataset(tmp_path / "absent.npz")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(DataSourceError, match="single.npy.*single array"):
        medmnist_dataset(single)


def test_pickled_arrays_are_never_loaded(tmp_path):
    arrays = _arrays()
    arrays["train_labels"] = np.array([object()] * 6, dtype=object)
    path = tmp_path / "pickled.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataSourceError, match="pickled.npz"):
        medmnist_dataset(path)


def test_too_few_class_names_and_bad_split(npz):
    with pytest.raises(DataSourceError, match="give 3 names"):
        medmnist_dataset(npz, classes=["a", "b"])
    with pytest.raises(ValueError, match="split"):
        medmnist_dataset(npz, split="validation")


def test_mismatched_lengths(tmp_path):
    arrays = _arrays()
    arrays["val_labels"] = arrays["val_labels"][:1]
    path = tmp_path / "damaged.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataSourceError, match="damaged.npz: 'val_images' holds 2 images but 'val_labels' 1"):
        medmnist_dataset(path)
