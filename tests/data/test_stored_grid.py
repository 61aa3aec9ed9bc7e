"""The stored grid (issue 29): [0, 1] is the stored domain linearly (8-bit grey levels, or CT's
-1024..3071 HU), and adversarial images are rounded to it inside their budget; the 8-bit numbers
of every run are unchanged."""

from __future__ import annotations

import numpy as np
import torch

from medrobust.attacks.budget import Budget, quantize_within
from medrobust.data.stored_grid import CT_HU, EIGHT_BIT, grid_for_bits
from medrobust.execution.pixels import quantise_8bit


def test_ct_hu_is_linear_on_the_stored_domain():
    assert (CT_HU.to_units(0.0), CT_HU.to_units(1.0), CT_HU.levels) == (-1024.0, 3071.0, 4095)
    assert CT_HU.eps_in_units(4 / 4095) == 4.0 and CT_HU.eps_from_units(4) == 4 / 4095
    hu = np.array([-1024, -1000, 0, 40, 3071])
    assert CT_HU.stored_values(CT_HU.from_units(hu.astype(np.float64))).tolist() == hu.tolist()
    clipped, outside = CT_HU.clip_units(np.array([-3000.0, 0.0, 5000.0]))
    assert clipped.tolist() == [-1024.0, 0.0, 3071.0] and outside == 2
    assert grid_for_bits(12).levels == CT_HU.levels and grid_for_bits(8) is EIGHT_BIT


def test_the_8bit_rounding_is_bit_for_bit_what_it_was():
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(quantise_8bit(x), torch.round(x * 255.0) / 255.0)
    assert torch.equal(EIGHT_BIT.round(x), torch.round(x * 255.0) / 255.0)
    assert np.array_equal(EIGHT_BIT.round(x.numpy()), np.round(x.numpy() * 255.0) / 255.0)


def test_an_adversarial_ct_image_rounds_to_integer_hu_within_4_hu():
    g = torch.Generator().manual_seed(0)
    clean = CT_HU.round(torch.rand(2, 1, 8, 8, 8, generator=g, dtype=torch.float64))
    budget = Budget(CT_HU.eps_from_units(4))
    adv = budget.project(clean + (torch.rand(clean.shape, generator=g, dtype=torch.float64) - 0.5) * 0.01, clean)
    rounded = quantize_within(adv, clean, budget, grid=CT_HU)
    hu = CT_HU.to_units(rounded)
    assert torch.allclose(hu, hu.round(), atol=1e-6)  # on the grid: integer HU
    assert (hu - CT_HU.to_units(clean)).abs().max().item() <= 4 + 1e-6  # inside the 4 HU ball
    assert torch.equal(rounded, quantize_within(adv, clean, budget, bits=12))  # the 12-bit grid is CT's
