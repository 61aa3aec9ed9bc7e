"""Budgets in HU (issue 29): ``4HU`` / ``4 HU`` parse to 4/4095 through the one parser, label as
``4HU`` (stable, distinct, 8-bit labels unchanged), read as ``4 HU`` to a person, and a run on 8-bit
data refuses them before any file is written."""

from __future__ import annotations

import pytest

from medrobust.data.stored_grid import CT_HU, EIGHT_BIT
from medrobust.evaluation.budget_units import check_budget_units
from medrobust.evaluation.config import ExperimentConfig
from medrobust.specs.components import eps_label, eps_text, is_hu_budget, parse_number


def test_hu_budgets_parse_label_and_read_in_hu():
    for text in ("4HU", "4 HU", " 4 hu ", "4/1HU"):
        assert parse_number(text) == pytest.approx(4 / 4095, rel=1e-12)
    assert [eps_label(parse_number(t)) for t in ("2HU", "4 HU", "8HU", "16HU", "0.5HU")] == \
        ["2HU", "4HU", "8HU", "16HU", "0.5HU"]
    labels = [eps_label(k / 4095) for k in range(1, 257)]
    assert len(set(labels)) == 256  # distinct stage keys for distinct budgets
    assert eps_label(parse_number("8/255")) == "8/255" and eps_label(parse_number("0.5/255")) == "1/510"
    assert eps_label(0.03) == "3/100" and not is_hu_budget(8 / 255) and is_hu_budget(4 / 4095)
    assert eps_text(4 / 4095, "HU") == "4 HU" and eps_text(8 / 255, "HU") == "128.47 HU" and eps_text(8 / 255) == "8/255"
    assert CT_HU.eps_in_units(parse_number("4HU")) == pytest.approx(4.0)


@pytest.mark.parametrize("text", ["-1HU", "4.25HU", "5000HU", "HU"])
def test_a_budget_in_hu_out_of_range_or_finer_than_a_tenth_is_refused(text):
    with pytest.raises(ValueError, match="HU|not a number"):
        parse_number(text)


def test_a_run_on_8_bit_data_refuses_budgets_in_hu_naming_the_field():
    config = ExperimentConfig(attacks=[{"name": "pgd", "params": {"eps": "8/255"}, "eps_sweep": ["2/255"]},
                                       {"name": "apgd-ce", "params": {"eps": "4 HU"}}])
    with pytest.raises(ValueError, match=r"attacks\[1\]\.params\.eps: the budget 4HU is in HU, but phantom holds 8-bit"):
        check_budget_units(config, EIGHT_BIT, "phantom")
    check_budget_units(config, CT_HU, "ct/")  # CT data: accepted
    sweep = ExperimentConfig(attacks=[{"name": "pgd", "params": {"eps": "8/255"}, "eps_sweep": ["2HU", "4/255"]}])
    with pytest.raises(ValueError, match=r"attacks\[0\]\.eps_sweep"):
        check_budget_units(sweep, EIGHT_BIT, "x")
    grid = ExperimentConfig(grid=["2HU", "4HU"])
    with pytest.raises(ValueError, match="grid: the budget 2HU"):
        check_budget_units(grid, EIGHT_BIT, "x")


def test_run_experiment_refuses_hu_on_phantom_radiographs_before_writing(tmp_path):
    from medrobust.evaluation.runner import run_experiment

    config = ExperimentConfig(name="hu-on-xray", output_dir=str(tmp_path), data={"source": "phantom:per_class=2,size=32"},
                              attacks=[{"name": "pgd", "params": {"eps": "4HU", "steps": 1}}])
    with pytest.raises(ValueError, match="is in HU"):
        run_experiment(config)
    assert not (tmp_path / "hu-on-xray").exists()
