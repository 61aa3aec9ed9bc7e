"""The example configurations are valid, and examples/demo.yaml is exactly `medrobust demo`'s."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medrobust.evaluation.config import load_config
from medrobust.evaluation.demo_config import demo_config, demo_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["demo.yaml", "nih-chestxray14.yaml", "own-model.yaml"])
def test_example_configs_validate(name: str) -> None:
    config = load_config(EXAMPLES / name)
    assert config.attacks and config.defenses


def test_demo_yaml_is_the_demo_command() -> None:
    assert yaml.safe_load((EXAMPLES / "demo.yaml").read_text()) == demo_settings(False)
    assert load_config(EXAMPLES / "demo.yaml") == demo_config(False)


def test_bad_config_names_the_file_and_field(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("attacks:\n  - {name: pgd, paramz: {}}\n")
    with pytest.raises(ValueError, match=r"(?s)bad.yaml.*attacks.0.paramz"):
        load_config(path)
