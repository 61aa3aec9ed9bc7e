"""PhantomDataset (the embedded default dataset) and writing it to disk."""

from __future__ import annotations

import csv

import numpy as np
import torch

from medrobust.data.io import read_image
from medrobust.data.phantom import PHANTOM_CLASSES, PhantomDataset, render_phantom
from medrobust.data.phantom.export import phantom_gallery, write_phantom_dataset


def test_dataset_is_balanced_split_60_20_20_and_yields_the_currency() -> None:
    ds = PhantomDataset(per_class=20, size=48, seed=3)
    assert len(ds) == 60
    assert ds.classes == list(PHANTOM_CLASSES)
    assert ds.class_counts() == {"Normal": 20, "Pneumonia": 20, "Pneumothorax": 20}
    splits = ds.splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 36, "val": 12, "test": 12}
    for part in splits.values():
        counts = set(part.class_counts().values())
        assert len(counts) == 1  # stratified: every class equally represented
    image, label, item_id = ds[4]
    assert image.shape == (1, 48, 48) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert label == 4 % 3 and item_id == "phantom-000004"
    x, y, ids = splits["test"].load(batch_size=5)
    assert x.shape == (12, 1, 48, 48) and y.tolist() == [r.label for r in splits["test"].records]
    assert ds.skipped == []


def test_item_is_the_same_however_it_is_reached() -> None:
    ds = PhantomDataset(per_class=10, size=40, seed=9)
    test = ds.subset("test")
    first = test.records[0]
    index = int(first.id.split("-")[1])
    assert torch.equal(test[0][0], ds[index][0])
    again = PhantomDataset(per_class=10, size=40, seed=9)
    assert torch.equal(again[index][0], ds[index][0])
    other = PhantomDataset(per_class=10, size=40, seed=10)
    assert not torch.equal(other[index][0], ds[index][0])


def test_write_phantom_dataset_writes_pngs_and_a_manifest(tmp_path) -> None:
    seen = []
    manifest = write_phantom_dataset(tmp_path, per_class=4, size=40, seed=5, progress=seen.append)
    assert seen[-1] == 12
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    assert {r["label"] for r in rows} == set(PHANTOM_CLASSES)
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for key in ("path", "id", "seed", "size", "patient_rotation_deg", "patient_exposure"):
        assert key in rows[0]
    ptx = [r for r in rows if r["label"] == "Pneumothorax"]
    assert all(r["pneumothorax_side"] in ("left", "right") for r in ptx)
    pna = [r for r in rows if r["label"] == "Pneumonia"]
    assert all(int(r["n_consolidations"]) >= 1 for r in pna)
    # the PNG holds the rendered image rounded to 8 bit
    ds = PhantomDataset(per_class=4, size=40, seed=5)
    row = rows[7]
    assert row["path"] == f"{row['label']}/{row['id']}.png"
    stored = read_image(tmp_path / row["path"])
    expected = np.round(render_phantom(ds.params(7), 40) * 255) / 255
    assert np.abs(stored - expected).max() < 1e-6


def test_same_seed_writes_byte_identical_files(tmp_path) -> None:
    write_phantom_dataset(tmp_path / "a", per_class=2, size=32, seed=1)
    write_phantom_dataset(tmp_path / "b", per_class=2, size=32, seed=1)
    for png in sorted((tmp_path / "a").rglob("*.png")):
        assert png.read_bytes() == (tmp_path / "b" / png.relative_to(tmp_path / "a")).read_bytes()
    assert (tmp_path / "a" / "manifest.csv").read_text() == (tmp_path / "b" / "manifest.csv").read_text()


def test_gallery_has_one_row_per_class() -> None:
    grid = phantom_gallery(per_class=3, size=64, seed=0)
    assert grid.mode == "L"
    assert grid.size[1] == 3 * (64 + 4)
