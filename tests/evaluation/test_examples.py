"""The example configurations are valid, and examples/demo.yaml is exactly `medrobust demo`'s."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medrobust.evaluation.config import load_config
from medrobust.evaluation.demo_config import demo_config, demo_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_configs_validate(name: str) -> None:
    config = load_config(EXAMPLES / name)
    assert config.attacks and config.defenses


def test_demo_yaml_is_the_demo_command() -> None:
    assert yaml.safe_load((EXAMPLES / "demo.yaml").read_text()) == demo_settings(False)
    assert load_config(EXAMPLES / "demo.yaml") == demo_config(False)


def test_bad_config_names_the_file_and_field(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("attacks:\n  - {name: pgd, paramz: {}}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: invalid configuration: attacks\[0\]\.paramz: is not a setting here"):
        load_config(path)


def test_a_wall_clock_budget_is_refused_with_the_reason(tmp_path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("model: {train: {arch: small-cnn, epochs: 3, max_minutes: 4}}\nattacks: [{name: pgd}]\n")
    with pytest.raises(ValueError, match=r"(?s)old.yaml.*max_minutes is gone.*machine's speed.*epochs"):
        load_config(path)


def test_the_demo_trains_a_fixed_amount_of_work() -> None:
    for quick in (False, True):
        for model in [demo_config(quick).model, *demo_config(quick).surrogates]:
            train = model.train
            assert train is not None and "max_minutes" not in train.model_dump()
            assert train.lr_schedule == "cosine" and train.epochs >= 6
