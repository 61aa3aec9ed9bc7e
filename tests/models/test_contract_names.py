"""The contract's names, read without torch (for the service's web process), are exactly the
enums' members, and parsing goes through them (aliases included)."""

from __future__ import annotations

import pytest

from medrobust.models.intensity import Intensity
from medrobust.models.output_kind import OutputKind
from medrobust.specs.contract_names import INTENSITY_NAMES, OUTPUT_KIND_NAMES, intensity_name, output_kind_name


def test_names_are_the_enums_members():
    assert tuple(i.value for i in Intensity) == INTENSITY_NAMES
    assert tuple(k.value for k in OutputKind) == OUTPUT_KIND_NAMES


@pytest.mark.parametrize("given, name", [("[-1, 1]", "symmetric"), ("None", "unit"), ("ImageNet", "imagenet"),
                                         ("[0,255]", "byte")])
def test_intensity_aliases(given, name):
    assert intensity_name(given) == name and Intensity.parse(given) is Intensity(name)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="use one of unit"):
        Intensity.parse("hu")
    with pytest.raises(ValueError, match="softmax, binary, multilabel"):
        OutputKind.parse("logits")
    assert output_kind_name("binary") == "binary" and OutputKind.parse(OutputKind.BINARY) is OutputKind.BINARY
