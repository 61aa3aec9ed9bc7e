"""``mr.attack`` on CT held as tensors: ``mr.open_images(x, grid="CT")`` says the tensors are CT
in the currency ``(HU + 1024) / 4095``, so a budget in HU means what it says and the result is
rounded to integer HU (as a run rounds it, and as the DICOM a user writes back holds); a budget
in HU on 8-bit tensors is refused with the way to say they are CT."""

from __future__ import annotations

import pytest
import torch

import medrobust as mr

CLASSES = ["normal", "haemorrhage", "infarct"]


def _volume_model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 3))
    return mr.load_model(net, classes=CLASSES, network_channels=1, input_size=[2, 8, 8], intensity="unit")


def test_a_budget_in_hu_on_ct_tensors_stays_within_it_on_integer_hu() -> None:
    torch.manual_seed(1)
    hu = torch.randint(-20, 80, (6, 1, 2, 8, 8)).float()  # brain-like integer HU
    x, y = (hu + 1024) / 4095, torch.tensor([0, 1, 2, 0, 1, 2])
    result = mr.attack(_volume_model(), mr.open_images(x, labels=y, classes=CLASSES, grid="CT"), "pgd:eps=32HU,steps=5")
    adv_hu = result.adversarial * 4095 - 1024
    assert torch.allclose(adv_hu, adv_hu.round(), atol=1e-3)  # integer HU, not 8-bit steps of 16 HU
    # crafted on the CT grid as a run crafts it (quantize_bits 12), not on the 8-bit grid's points
    eight_bit_points = {round(k * 4095 / 255) - 1024 for k in range(256)}
    assert set(adv_hu.round().int().unique().tolist()) - eight_bit_points
    change = (adv_hu - hu).abs()
    assert float(change.max()) <= 32 + 1e-3 and float(change.max()) > 16  # the whole budget, never more
    assert result.grid.unit == "HU"


def test_a_budget_in_hu_on_8bit_tensors_is_refused_with_the_fix() -> None:
    x, y = torch.rand(3, 1, 2, 8, 8), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"4HU is in HU, but tensors holds 8-bit images.*grid='CT'"):
        mr.attack(_volume_model(), mr.open_images(x, labels=y, classes=CLASSES), "pgd:eps=4HU,steps=2")
    with pytest.raises(ValueError, match="grid='CT' is for tensors"):
        mr.open_images("phantom", grid="CT")
    with pytest.raises(ValueError, match="use 'CT'"):
        mr.open_images(x, grid="16-bit")
