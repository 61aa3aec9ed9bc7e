"""The package's public face: re-exported classes and torchattacks' calling convention for
every registered attack."""

from __future__ import annotations

import pytest
import torch

import medrobust.attacks as attacks
from medrobust.attacks import attack_parameters, build_attack, list_attacks
from medrobust.attacks.budget import Budget
from medrobust.models import build_classifier

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_classifier("small-cnn", CLASSES, 32)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    return model, x, torch.tensor([0, 2])


def test_each_registered_attack_is_reexported_under_its_class_name() -> None:
    for name in list_attacks():
        cls = type(build_attack(name))
        assert getattr(attacks, cls.__name__) is cls, name
        assert cls.name == name


@pytest.mark.parametrize("name", list_attacks())
def test_plain_call_with_defaults_works(name: str, tiny) -> None:
    """``Attack(eps=8/255)(model, x, y)`` for every attack: no generator, no other argument."""
    model, x, y = tiny
    cls = type(build_attack(name))
    kwargs = {"eps": 8 / 255} if "eps" in attack_parameters(name) else {}
    x_adv = cls(**kwargs)(model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    if kwargs:
        assert Budget(8 / 255).contains(x_adv, x)
    assert model.training  # the caller's mode is restored
