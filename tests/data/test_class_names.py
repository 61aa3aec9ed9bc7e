"""Class names paired as a person reads them: case, separators and order do not matter."""

from __future__ import annotations

import numpy as np
import pytest

from medrobust.data.class_names import (
    ClassMatchError,
    canonical_class_name,
    find_classes,
    find_normal_class,
    match_classes,
)


@pytest.mark.parametrize("classes", [
    ["NORMAL", "PNEUMONIA"], ["normal", "pneumonia"], ["Pneumonia", "No Finding"], ["no_finding", "effusion"],
    ["Effusion", "NO-FINDING"], ["healthy", "sick"], ["Negative", "Positive"],
])
def test_the_normal_class_is_found_whatever_its_spelling(classes) -> None:
    i = find_normal_class(classes)
    assert i is not None and canonical_class_name(classes[i]) in {"normal", "nofinding", "healthy", "negative"}


def test_no_normal_class_is_none_and_an_override_wins() -> None:
    assert find_normal_class(["Effusion", "Pneumonia"]) is None
    assert find_normal_class(["Effusion", "Pneumonia"], override="effusion") == 0
    assert find_normal_class(["normal", "benign", "malignant"]) == 0  # the more specific name first
    with pytest.raises(ClassMatchError, match="normal_class"):
        find_normal_class(["A", "B"], override="Normal")


def test_emergency_findings_match_canonically() -> None:
    assert find_classes(["pneumothorax"], ["Normal", "PNEUMOTHORAX", "Pneumonia"]) == [1]
    assert find_classes(["pleural effusion"], ["Pleural_Effusion"]) == [0]


def test_reordered_and_recased_classes_map_by_name() -> None:
    out = match_classes(["PNEUMOTHORAX", "NORMAL", "PNEUMONIA"], ["Normal", "Pneumonia", "Pneumothorax"])
    assert out.tolist() == [2, 0, 1] and out.dtype == np.int64


def test_renamed_missing_and_extra_classes_are_errors_naming_both_lists() -> None:
    with pytest.raises(ClassMatchError, match=r"\['PNEUMONA'\] are not model classes.*class_map"):
        match_classes(["NORMAL", "PNEUMONA"], ["Normal", "Pneumonia"])
    with pytest.raises(ClassMatchError, match=r"\['Pneumothorax'\] have no data"):
        match_classes(["NORMAL", "PNEUMONIA"], ["Normal", "Pneumonia", "Pneumothorax"])
    with pytest.raises(ClassMatchError, match="not model classes"):
        match_classes(["NORMAL", "PNEUMONIA", "EFFUSION"], ["Normal", "Pneumonia"])


def test_an_explicit_map_pairs_other_names_and_a_subset() -> None:
    out = match_classes(["healthy", "PNEU"], ["Normal", "Pneumonia", "Pneumothorax"],
                        {"healthy": "normal", "pneu": "Pneumonia"})
    assert out.tolist() == [0, 1]
    with pytest.raises(ClassMatchError, match="not a model class"):
        match_classes(["healthy"], ["Normal"], {"healthy": "Fine"})
    with pytest.raises(ClassMatchError, match="not data classes"):
        match_classes(["healthy"], ["Normal"], {"unknown": "Normal"})
    with pytest.raises(ClassMatchError, match="same model class"):
        match_classes(["a", "b"], ["Normal", "X"], {"a": "Normal", "b": "Normal"})


def test_names_that_differ_only_in_case_are_refused() -> None:
    with pytest.raises(ClassMatchError, match="differ only in case"):
        match_classes(["Normal", "NORMAL"], ["Normal"])
