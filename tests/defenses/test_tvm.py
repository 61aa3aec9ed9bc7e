"""Guo et al.'s randomized TVM: seeded masks, kept pixels, independence from dropped pixels."""

from __future__ import annotations

import pytest
import torch

from medrobust.defenses.registry import build_defense
from medrobust.defenses.total_variation import tv_denoise
from medrobust.defenses.tvm import RandomizedTVM, _masked_tv, pixel_mask, tvm

from .helpers import psnr


def test_same_seed_same_output_and_different_seeds_differ(phantoms) -> None:
    a = tvm(phantoms, generator=torch.Generator().manual_seed(1))
    b = tvm(phantoms, generator=torch.Generator().manual_seed(1))
    c = tvm(phantoms, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert RandomizedTVM(seed=4)(phantoms).equal(RandomizedTVM(seed=4)(phantoms))


def test_each_call_draws_a_new_mask_and_manual_seed_restarts(phantoms) -> None:
    defense = RandomizedTVM(seed=7)
    first, second = defense(phantoms), defense(phantoms)
    assert not torch.equal(first, second)
    defense.manual_seed(7)
    assert torch.equal(defense(phantoms), first)
    assert defense.randomized and not defense.differentiable


def test_kept_pixels_are_nearly_preserved(phantoms) -> None:
    generator = torch.Generator().manual_seed(3)
    mask = pixel_mask(tuple(phantoms.shape), 0.5, torch.Generator().manual_seed(3), phantoms.device, phantoms.dtype)
    out = tvm(phantoms, drop_prob=0.5, weight=0.03, generator=generator)
    kept = mask.expand_as(phantoms) > 0
    assert 0.4 < kept.float().mean() < 0.6
    kept_error, dropped_error = (out - phantoms)[kept].abs().mean(), (out - phantoms)[~kept].abs().mean()
    assert kept_error < 0.02 and kept_error < dropped_error
    assert psnr(out, phantoms) > 28.0  # the dropped half is filled in plausibly


def test_output_ignores_the_values_of_dropped_pixels(phantoms) -> None:
    mask = pixel_mask(tuple(phantoms.shape), 0.5, torch.Generator().manual_seed(9), phantoms.device, phantoms.dtype)
    scrambled = torch.where(mask > 0, phantoms, torch.rand(phantoms.shape, generator=torch.Generator().manual_seed(0)))
    a = tvm(phantoms, generator=torch.Generator().manual_seed(9))
    b = tvm(scrambled, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_without_dropping_it_is_tv_denoising(noisy_phantoms) -> None:
    x = noisy_phantoms[:2]
    out = tvm(x, drop_prob=0.0, weight=0.1, tol=1e-5, max_iter=2000)
    assert psnr(out, tv_denoise(x, 0.1, tol=1e-5, max_iter=2000)) > 50.0


def test_result_does_not_depend_on_batch_mates(phantoms) -> None:
    mask = pixel_mask(tuple(phantoms.shape), 0.5, torch.Generator().manual_seed(5), phantoms.device, phantoms.dtype)
    together = torch.full_like(phantoms, -1.0)
    _masked_tv(together, phantoms, mask, 0.015, 100, 5e-4)
    assert together.min() >= 0.0  # every image's result was written
    for i in range(len(phantoms)):
        alone = torch.empty_like(phantoms[i : i + 1])
        _masked_tv(alone, phantoms[i : i + 1], mask[i : i + 1], 0.015, 100, 5e-4)
        assert torch.allclose(alone, together[i : i + 1], atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"drop_prob": 1.0}, {"drop_prob": -0.1}, {"weight": -1.0}, {"max_iter": 0}])
def test_bad_parameters_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        RandomizedTVM(**kwargs)


def test_registry_builds_it_with_a_seed(phantoms) -> None:
    defense = build_defense("tvm:drop_prob=0.3,weight=0.05,seed=11")
    assert isinstance(defense, RandomizedTVM) and defense.drop_prob == 0.3 and defense.seed == 11
    assert torch.equal(defense(phantoms), RandomizedTVM(drop_prob=0.3, weight=0.05, seed=11)(phantoms))


def test_seeded_defense_does_not_replay_a_plain_generator_of_the_same_seed(phantoms) -> None:
    # an attack seeded 0 draws from torch.Generator().manual_seed(0); the defense's stream must differ
    defended = RandomizedTVM(seed=0)(phantoms)
    assert not torch.equal(defended, tvm(phantoms, generator=torch.Generator().manual_seed(0)))
