"""Stratified and patient-grouped splits: proportions, no patient overlap, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medrobust.data.splits import (
    SPLIT_NAMES,
    patient_grouped_split,
    split_counts,
    split_summary,
    stratified_split,
)

FRACTIONS = (0.6, 0.2, 0.2)


def _counts(labels, splits, k):
    return [int(np.sum((labels == k) & (splits == s))) for s in SPLIT_NAMES]


@pytest.mark.parametrize(
    "n, expected",
    [(10, [6, 2, 2]), (100, [60, 20, 20]), (3, [2, 1, 0]), (4, [2, 1, 1]), (7, [4, 2, 1]), (0, [0, 0, 0])],
)
def test_split_counts(n, expected):
    assert split_counts(n, FRACTIONS).tolist() == expected


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.6, 0.3, 0.3), (1.2, -0.1, -0.1), (np.nan, 0.5, 0.5)])
def test_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        stratified_split([0, 1, 0], fractions)


def test_stratified_exact_per_class():
    labels = np.repeat([0, 1, 2, 3], [1000, 37, 5, 1])
    splits = stratified_split(labels, FRACTIONS, seed=42)
    assert set(splits) <= set(SPLIT_NAMES)
    for k, n in enumerate([1000, 37, 5, 1]):
        assert _counts(labels, splits, k) == split_counts(n, FRACTIONS).tolist()
    assert _counts(labels, splits, 0) == [600, 200, 200]


def test_stratified_with_string_labels_and_other_fractions():
    labels = np.array(["b", "a"] * 50)
    splits = stratified_split(labels, (0.8, 0.0, 0.2), seed=1)
    assert _counts(labels, splits, "a") == [40, 0, 10]
    assert _counts(labels, splits, "b") == [40, 0, 10]


def test_stratified_deterministic_and_seeded():
    labels = np.repeat([0, 1, 2], 200)
    a = stratified_split(labels, seed=42)
    np.testing.assert_array_equal(a, stratified_split(labels, seed=42))
    assert not np.array_equal(a, stratified_split(labels, seed=43))


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=0, max_size=300),
    fractions=st.sampled_from([(0.6, 0.2, 0.2), (0.7, 0.15, 0.15), (0.8, 0.0, 0.2), (1 / 3, 1 / 3, 1 / 3)]),
    seed=st.integers(0, 2**31),
)
def test_stratified_property(labels, fractions, seed):
    labels = np.asarray(labels, dtype=np.int64)
    splits = stratified_split(labels, fractions, seed=seed)
    assert len(splits) == len(labels)
    for k in np.unique(labels):
        n = int(np.sum(labels == k))
        counts = _counts(labels, splits, k)
        assert sum(counts) == n
        assert all(abs(c - n * f) < 1 for c, f in zip(counts, fractions))


def _synthetic_patients(n_patients=3000, seed=0):
    """Patients with 1-20 images; most carry one class, some a second one (as in ChestX-ray14)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 21, n_patients)
    main = rng.choice(3, n_patients, p=[0.75, 0.07, 0.18])
    labels, patients = [], []
    for p, (size, cls) in enumerate(zip(sizes, main)):
        own = np.full(size, cls)
        mixed = rng.random(size) < 0.15
        own[mixed] = rng.choice(3, int(mixed.sum()))
        labels.append(own)
        patients.append(np.full(size, f"P{p:05d}"))
    return np.concatenate(labels), np.concatenate(patients)


def _assert_grouped_and_balanced(labels, patients, splits, fractions=FRACTIONS, tolerance=0.02):
    groups = [set(patients[splits == s]) for s in SPLIT_NAMES]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    for k in np.unique(labels):
        n = np.sum(labels == k)
        for s, f in zip(SPLIT_NAMES, fractions):
            share = np.sum((labels == k) & (splits == s)) / n
            assert abs(share - f) <= tolerance, (k, s, share)
    for s, f in zip(SPLIT_NAMES, fractions):
        assert abs(np.mean(splits == s) - f) <= tolerance


def test_patient_grouped_no_overlap_and_proportions():
    labels, patients = _synthetic_patients()
    splits = patient_grouped_split(labels, patients, FRACTIONS, seed=42)
    _assert_grouped_and_balanced(labels, patients, splits)


def test_patient_grouped_deterministic_and_seeded():
    labels, patients = _synthetic_patients(600, seed=1)
    a = patient_grouped_split(labels, patients, seed=42)
    np.testing.assert_array_equal(a, patient_grouped_split(labels, patients, seed=42))
    b = patient_grouped_split(labels, patients, seed=7)
    assert not np.array_equal(a, b)
    _assert_grouped_and_balanced(labels, patients, b, tolerance=0.03)


def test_patient_grouped_other_fractions_and_zero_split():
    labels, patients = _synthetic_patients(1500, seed=2)
    splits = patient_grouped_split(labels, patients, (0.8, 0.0, 0.2), seed=3)
    assert not np.any(splits == "val")
    _assert_grouped_and_balanced(labels, patients, splits, (0.8, 0.0, 0.2))


def test_patient_grouped_on_60k_rows():
    """NIH-sized input (O(patients x classes), a fraction of a second; no wall time asserted)."""
    rng = np.random.default_rng(5)
    patients = rng.integers(0, 30000, 60000).astype(str)
    labels = rng.choice(3, 60000, p=[0.9, 0.03, 0.07])
    splits = patient_grouped_split(labels, patients, seed=42)
    _assert_grouped_and_balanced(labels, patients, splits)


def test_patient_grouped_edge_cases():
    assert len(patient_grouped_split([], [])) == 0
    single = patient_grouped_split([1, 1, 1], ["a", "a", "a"])
    assert len(set(single)) == 1
    with pytest.raises(ValueError, match="same length"):
        patient_grouped_split([0, 1], ["a"])


def test_split_summary_table():
    labels = np.array([0, 0, 1, 1, 1, 2])
    splits = np.array(["train", "test", "train", "val", "train", "train"])
    table = split_summary(labels, splits, ["Normal", "Pneumonia", "Pneumothorax"])
    lines = table.splitlines()
    assert lines[0].split() == ["class", "train", "val", "test", "total"]
    assert lines[1].split() == ["Normal", "1", "0", "1", "2"]
    assert lines[2].split() == ["Pneumonia", "2", "1", "0", "3"]
    assert lines[-1].split() == ["total", "4", "1", "1", "6"]


def test_split_summary_without_splits():
    table = split_summary([0, 1], [None, None], ["a", "b"])
    assert table.splitlines()[0].split() == ["class", "none", "total"]
