"""The presets: APGD-CE (quick) and AutoAttack (standard, thorough) on one grid that every row
is measured on — white-box sweep, adaptive portfolio, transfer and query attacks alike."""

from __future__ import annotations

import pytest

from medrobust.defenses.total_variation import HU_TV
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


@pytest.mark.parametrize("preset", PRESETS)
def test_a_ct_model_is_evaluated_on_budgets_in_hu(preset) -> None:
    """A model reading CT windows gets every budget k/255 as 2k HU: 16 HU in place of 8/255 (128 HU)."""
    config = _validated(preset_settings(preset, hu=True, train_data="train/"))
    hu = sorted(round(g * 4095, 6) for g in config.grid)
    assert hu == {"quick": [2, 4, 8, 16], "standard": [2, 4, 8, 16, 32], "thorough": [1, 2, 4, 8, 16, 32]}[preset]
    assert config.attacks[0].params["eps"] == "16HU" and config.attacks[0].eps_sweep == config.grid
    assert config.adaptive.eps_sweep == config.grid
    assert all("JPEG" in r or r.startswith(("tv (", "tvm (", "bits:bits=5 (")) for r in config.left_out)  # defenses only
    assert preset_settings(preset) == preset_settings(preset, hu=False)  # 8-bit: unchanged


@pytest.mark.parametrize("preset", PRESETS)
def test_a_ct_slice_model_gets_no_jpeg_and_tv_at_its_weight_for_hu(preset) -> None:
    """2-D CT slices (RSNA-style haemorrhage models): JPEG would round 4096 HU levels to 256, and TV
    at the study's weight smooths like 400 HU; both are changed, and said so."""
    config = _validated(preset_settings(preset, hu=True))
    assert not any("jpeg" in d for d in config.defenses) and HU_TV in config.defenses and "tv" not in config.defenses
    reasons = "\n".join(config.left_out)
    assert "JPEG codes 8-bit images: on CT it would round 4096 HU levels to 256" in reasons
    assert f"tv (the preset's defense): run as {HU_TV} on CT" in reasons or preset != "thorough"
    assert "sia" in [a.name for a in config.attacks]  # slices are 2-D: SIA runs
    if preset == "thorough":  # 5-bit depth (132 HU steps) and TVM (weighted for radiographs) are left out, said so
        assert config.defenses == [HU_TV, "median:size=3"]
        assert "bits:bits=5 (the preset's defense): not evaluated on CT: 5 bits of the 12-bit HU range" in reasons
        assert "tvm (the preset's defense): not evaluated on CT: its drop rate and weight" in reasons
        assert {"bits:bits=5", "tvm"} <= set(preset_settings(preset)["defenses"])  # radiographs: every defense


@pytest.mark.parametrize("preset", PRESETS)
def test_a_volume_model_runs_what_takes_volumes_and_says_what_was_left_out_and_why(preset) -> None:
    config = _validated(preset_settings(preset, volumes=True, hu=True))
    names = [a.name for a in config.attacks]
    assert "sia" not in names and names[0] == ("apgd" if preset == "quick" else "autoattack")
    # TV at its weight for HU on CT (the study's 0.1 smooths like 400 HU there), said so
    assert "jpeg+tv" not in config.defenses and HU_TV in config.defenses and "tv" not in config.defenses
    assert f"tv (the preset's defense): run as {HU_TV} on CT" in "\n".join(config.left_out)
    assert "tv" in preset_settings(preset, volumes=True, hu=False)["defenses"]  # volumes on the 8-bit grid: as is
    assert not {"jpeg", "tvm"} & set(config.defenses)
    assert "jpeg" not in config.detectors.squeeze.squeezers
    reasons = "\n".join(config.left_out)
    assert "sia (the preset's attack): not run, it refuses volumes: " in reasons
    assert "the squeeze detector's JPEG squeezer: left out" in reasons
    if preset == "thorough":  # TV is among its defenses already
        assert "jpeg+tv (the preset's defense): not evaluated, it refuses volumes: " in reasons
        assert "tvm (the preset's defense): not evaluated, it refuses volumes: " in reasons
    else:
        assert "jpeg+tv (the preset's defense): evaluated as tv alone, since its JPEG refuses volumes: " in reasons
    black_box = _validated(preset_settings(preset, differentiable=False, volumes=True, hu=True))
    assert [a.name for a in black_box.attacks] == ["square"] and "sia" not in "\n".join(black_box.left_out)
