"""Learning-rate schedules: the linear warm-up, the cosine curve's ends and middle (known
values), and the study's plateau rule taking over after warm-up."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from medrobust.models.lr_schedule import LearningRateSchedule
from medrobust.models.training import TrainConfig


def _optimizer(lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _rates(schedule: LearningRateSchedule, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        schedule.before_step()
        out.append(schedule.optimizer.param_groups[0]["lr"])
    return out


def test_cosine_with_warm_up_known_values() -> None:
    schedule = LearningRateSchedule(_optimizer(), "cosine", lr=1e-3, total_steps=14, warmup_steps=4, min_lr=0.0)
    rates = _rates(schedule, 14)
    assert rates[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert rates[4] == pytest.approx(1e-3)  # the cosine starts at the full rate
    assert rates[9] == pytest.approx(0.5e-3)  # half-way through the 10 cosine steps
    assert rates[13] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 9 / 10)))


@given(st.integers(1, 400), st.integers(0, 50), st.floats(1e-6, 1.0), st.floats(0.0, 1e-6))
def test_cosine_decreases_after_warm_up_and_stays_in_range(total: int, warmup: int, lr: float, min_lr: float) -> None:
    schedule = LearningRateSchedule(_optimizer(lr), "cosine", lr=lr, total_steps=total, warmup_steps=warmup, min_lr=min_lr)
    rates = _rates(schedule, total)
    w = min(warmup, total)
    assert all(0 < r <= lr * (1 + 1e-12) for r in rates[:w])
    assert all(b <= a * (1 + 1e-12) for a, b in zip(rates[w:], rates[w + 1:]))
    assert all(min(min_lr, lr) - 1e-15 <= r <= lr * (1 + 1e-12) for r in rates[w:])


def test_plateau_rule_takes_over_after_warm_up() -> None:
    optimizer = _optimizer()
    schedule = LearningRateSchedule(optimizer, "plateau", lr=1e-3, total_steps=40, warmup_steps=2, plateau_patience=1)
    assert _rates(schedule, 3) == pytest.approx([5e-4, 1e-3, 1e-3])
    for loss in (1.0, 1.0, 1.0):  # no improvement for more than `patience` epochs: halve
        schedule.after_epoch(loss)
    assert _rates(schedule, 1) == pytest.approx([5e-4])


def test_plateau_without_warm_up_is_the_study_rule() -> None:
    schedule = LearningRateSchedule(_optimizer(), "plateau", lr=1e-3, total_steps=10)
    assert _rates(schedule, 10) == pytest.approx([1e-3] * 10)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="cosine"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(warmup_epochs=-1)
