"""The presets: APGD-CE (quick) and AutoAttack (standard, thorough) on one grid that every row
is measured on — white-box sweep, adaptive portfolio, transfer and query attacks alike."""

from __future__ import annotations

import pytest

from medrobust.evaluation.config import ExperimentConfig
from medrobust.layer.presets import GRIDS, PRESETS, preset_settings
from medrobust.specs.components import parse_number


def _validated(settings: dict) -> ExperimentConfig:
    return ExperimentConfig.model_validate({**settings, "data": {"source": "phantom"},
                                            "model": {"load": {"path": "m.pt", "classes": ["A", "B"],
                                                               "intensity": "unit"}}})


def test_quick_is_apgd_ce_with_100_steps_and_one_restart_on_1_2_4_8() -> None:
    config = _validated(preset_settings("quick"))
    apgd = config.attacks[0]
    assert apgd.name == "apgd" and apgd.params == {"eps": "8/255", "loss": "ce", "steps": 100, "restarts": 1}
    assert [round(e * 255, 6) for e in config.grid] == [1, 2, 4, 8]
    assert config.adaptive.attack == "apgd" and config.adaptive.eps_sweep == config.grid == apgd.eps_sweep


@pytest.mark.parametrize("preset", ["standard", "thorough"])
def test_standard_and_thorough_run_autoattack_on_their_grid(preset) -> None:
    config = _validated(preset_settings(preset, train_data="train/"))
    names = [a.name for a in config.attacks]
    assert names[0] == "autoattack" and {"sia", "mifgsm"} <= set(names)
    assert config.attacks[0].params["steps"] == 100 and config.attacks[0].params["queries"] == 5000
    assert config.grid == sorted(parse_number(g) for g in GRIDS[preset])
    assert config.attacks[0].eps_sweep == config.adaptive.eps_sweep == config.grid
    assert all(a.transfer for a in config.attacks) and config.surrogates  # transferred on the same sweep
    if preset == "thorough":
        assert config.grid[0] == pytest.approx(0.5 / 255) and "apgd" in names
        assert next(a for a in config.attacks if a.name == "apgd").params["restarts"] == 3
        assert next(a for a in config.attacks if a.name == "sia").eps_sweep == config.grid


@pytest.mark.parametrize("preset", PRESETS)
def test_a_black_box_meets_square_on_the_same_grid(preset) -> None:
    config = _validated(preset_settings(preset, differentiable=False))
    (square,) = [a for a in config.attacks if a.white_box]
    assert square.name == "square" and square.eps_sweep == config.grid == config.adaptive.eps_sweep
    assert config.adaptive.attack == "square"


def test_an_unknown_preset_is_refused_naming_the_three() -> None:
    with pytest.raises(ValueError, match="quick, standard, thorough"):
        preset_settings("fast")
