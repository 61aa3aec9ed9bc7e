"""``data.split`` fractions are checked by the configuration schema itself, so the command line,
the Python layer and the service refuse the same splits before any work (issue 25, point 20:
``[0.5, 0.5, 0.5]`` passed the service's check and failed in the worker)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from medrobust.evaluation.config import ExperimentConfig, load_config


@pytest.mark.parametrize("split", [[0.5, 0.5, 0.5], [0.7, 0.4, -0.1], [0, 0, 0], [0.6, 0.2, 0.19]])
def test_fractions_that_are_not_a_split_are_refused(split):
    with pytest.raises(ValidationError, match="summing to 1") as refused:
        ExperimentConfig.model_validate({"data": {"split": split}})
    assert refused.value.errors()[0]["loc"] == ("data", "split")


def test_a_fraction_that_is_not_a_number_is_refused():
    with pytest.raises(ValidationError, match="finite number") as refused:
        ExperimentConfig.model_validate({"data": {"split": [float("nan"), 0.5, 0.5]}})
    assert refused.value.errors()[0]["loc"][:2] == ("data", "split")


@pytest.mark.parametrize("split", [[0.6, 0.2, 0.2], [0.8, 0.0, 0.2], [1 / 3, 1 / 3, 1 / 3], "test"])
def test_a_split_summing_to_one_is_kept(split):
    loaded = {"load": {"path": "model.onnx", "classes": ["Normal", "Pneumonia"]}}  # "test": nothing is trained
    config = ExperimentConfig.model_validate({"data": {"split": split}, "model": loaded})
    assert config.data.split == (split if split == "test" else tuple(split))


def test_a_configuration_file_with_a_bad_split_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "vendor.yaml"
    path.write_text("data: {split: [0.5, 0.5, 0.5]}\n")
    with pytest.raises(ValueError, match=r"vendor\.yaml: invalid configuration") as refused:
        load_config(path)
    assert "data.split" in str(refused.value) and "(0.5, 0.5, 0.5)" in str(refused.value)
