"""A redesign changes no number: the golden ``full_config`` run (tests/golden.py) gives exactly
the stage arrays and metrics recorded before the evaluation room was redesigned (issue 26). The
reduced demo's record is checked by test_reproducible_demo, the Ray run's by test_ray_engine
(equal to this local run, bit for bit)."""

from __future__ import annotations

from tests.golden import assert_golden


def test_the_full_configuration_gives_the_recorded_figures_and_hashes(golden_full_run) -> None:
    assert_golden("full_config", golden_full_run)
