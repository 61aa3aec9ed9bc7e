"""APGD (Croce & Hein 2020): its step-size schedule traced by hand, its budget and determinism, and
its accuracy against an independent implementation (torchattacks' APGD and APGDT) on a trained
model: within one image of 64."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from medrobust.attacks import APGD, AutoAttack, Budget, build_attack
from medrobust.attacks import apgd as apgd_module
from medrobust.attacks.apgd import checkpoints, dlr_loss
from medrobust.data.phantom import PhantomDataset


def test_the_checkpoints_are_the_papers() -> None:
    # w_1 = 0.22 N, then each gap max(previous gap - 0.03 N, 0.06 N): 22, +19, +16, +13, +10, +7, +6, +6
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9]  # gaps of at least one step
    assert checkpoints(1) == []


class Flat(nn.Module):
    """Logits that do not depend on the image: every step's loss is the same, so it never rises."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[2.0, 0.0, -1.0]]).repeat(len(x), 1) + 0 * x.flatten(1).sum(1, keepdim=True)


def test_a_loss_that_never_rises_halves_the_step_at_every_checkpoint(monkeypatch) -> None:
    """The trace of the schedule on a flat loss: at each checkpoint no step raised the loss, so
    condition 1 halves every image's step, and the spans are the checkpoints' gaps."""
    calls = []
    original = apgd_module.halve_step

    def recording(rises, span, rho, halved_before, best_before, best_now):
        out = original(rises, span, rho, halved_before, best_before, best_now)
        calls.append((rises.tolist(), span, out.tolist()))
        return out

    monkeypatch.setattr(apgd_module, "halve_step", recording)
    x = torch.full((2, 1, 8, 8), 0.5)
    APGD(eps=4 / 255, steps=10, quantize_bits=None)(Flat(), x, torch.tensor([0, 0]))
    assert [span for _, span, _ in calls] == [2, 1, 1, 1, 1, 1, 1, 1]
    assert all(rises == [0.0, 0.0] and halved == [True, True] for rises, _, halved in calls)


def test_dlr_is_the_papers_ratio() -> None:
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    y = torch.tensor([0])
    assert dlr_loss(z, y).item() == pytest.approx(-(3 - 1) / (3 - 0))  # -(z_y - max other) / (z_pi1 - z_pi3)
    assert dlr_loss(z, torch.tensor([1])).item() == pytest.approx(-(1 - 3) / (3 - 0))
    assert dlr_loss(z, y, torch.tensor([2])).item() == pytest.approx(-(3 - 0) / (3 - (0 + -1) / 2))
    assert dlr_loss(z * 7 + 2, y).item() == pytest.approx(dlr_loss(z, y).item())  # shift and scale invariant


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 3)).eval()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), eps_levels=st.integers(1, 12), norm=st.sampled_from(["linf", "l2"]),
       spec=st.sampled_from(["apgd", "apgd:loss=dlr", "apgd:targeted=true", "apgd:restarts=2"]),
       quantize=st.booleans())
def test_budget_range_shape_and_seed(seed, eps_levels, norm, spec, quantize) -> None:
    model = _tiny()
    g = torch.Generator().manual_seed(seed)
    x = torch.round(torch.rand(3, 1, 12, 12, generator=g) * 255) / 255
    y = torch.randint(0, 3, (3,), generator=g)
    eps = eps_levels / 255 if norm == "linf" else eps_levels / 50
    make = lambda: build_attack(spec, eps=eps, norm=norm, steps=6, seed=seed,  # noqa: E731
                                quantize_bits=8 if quantize else None)
    x_adv = make()(model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert Budget(eps, norm).contains(x_adv, x, tol=1e-5)
    if quantize:
        assert torch.allclose(x_adv * 255, torch.round(x_adv * 255), atol=1e-4)
    assert torch.equal(x_adv, make()(model, x, y))


@pytest.fixture(scope="module")
def test_images():
    x, y, _ = PhantomDataset(per_class=22, size=32, seed=5, fractions=None).load()
    return x[:64], y[:64]


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    with torch.no_grad():
        return int((model(x).argmax(1) == y).sum())


def test_apgd_ce_matches_torchattacks_within_one_image(trained_small_cnn, test_images) -> None:
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is the tests' reference (make installs it)")
    model = trained_small_cnn.eval()
    x, y = test_images
    eps = 2 / 255  # where the robust accuracy is neither the clean one nor 0
    ours = APGD(eps=eps, steps=20, seed=0, quantize_bits=None)(model, x, y)
    reference = torchattacks.APGD(model, norm="Linf", eps=eps, steps=20, n_restarts=1, seed=0, loss="ce")(x, y)
    ours_right, theirs_right, clean = _accuracy(model, ours, y), _accuracy(model, reference, y), _accuracy(model, x, y)
    assert 0 < theirs_right < clean  # the comparison means something
    assert abs(ours_right - theirs_right) <= 1


class FourLogits(nn.Module):
    """A trained three-class model given a fourth class it never prefers (DLR_T needs four)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return torch.cat([z, z.min(1, keepdim=True).values - 5.0], dim=1)


def test_apgd_t_matches_torchattacks_within_one_image(trained_small_cnn, test_images) -> None:
    torchattacks = pytest.importorskip("torchattacks", reason="torchattacks is the tests' reference (make installs it)")
    model = FourLogits(trained_small_cnn.eval()).eval()
    x, y = test_images
    eps = 2 / 255
    ours = APGD(eps=eps, steps=20, targeted=True, seed=0, quantize_bits=None)(model, x, y)
    reference = torchattacks.APGDT(model, norm="Linf", eps=eps, steps=20, n_restarts=1, seed=0, n_classes=4)(x, y)
    ours_right, theirs_right, clean = _accuracy(model, ours, y), _accuracy(model, reference, y), _accuracy(model, x, y)
    assert 0 < theirs_right < clean
    assert abs(ours_right - theirs_right) <= 1


def test_a_stored_image_must_fool_the_model_too(trained_small_cnn, test_images) -> None:
    """On the 8-bit grid an image counts as broken only when its stored version is misclassified:
    never more broken images than with floats, and every one of them really is."""
    model = trained_small_cnn.eval()
    x, y = test_images
    x = torch.round(x * 255) / 255
    stored = APGD(eps=2 / 255, steps=20, seed=0)(model, x, y)
    assert torch.equal(stored, torch.round(stored * 255) / 255)
    assert Budget(2 / 255, "linf").contains(stored, x, tol=1e-6)
    floats = APGD(eps=2 / 255, steps=20, seed=0, quantize_bits=None)(model, x, y)
    assert _accuracy(model, stored, y) >= _accuracy(model, floats, y) - 2


def test_autoattack_runs_its_members_in_sequence_and_says_who_broke_what(trained_small_cnn, test_images) -> None:
    model = trained_small_cnn.eval()
    x, y = test_images
    x, y = torch.round(x[:24] * 255) / 255, y[:24]
    attack = AutoAttack(eps=2 / 255, steps=10, queries=50, seed=0)
    x_adv = attack(model, x, y)
    with torch.no_grad():
        clean_wrong = model(x).argmax(1) != y
        adv_wrong = model(x_adv).argmax(1) != y
    assert set(attack.broken_by) <= {"clean", "apgd-ce", "apgd-t", "square", ""}
    assert [b == "clean" for b in attack.broken_by] == clean_wrong.tolist()
    assert [b != "" for b in attack.broken_by] == adv_wrong.tolist()  # broken exactly when the result is wrong
    alone = APGD(eps=2 / 255, steps=10, seed=0)(model, x, y)
    with torch.no_grad():
        assert int(adv_wrong.sum()) >= int((model(alone).argmax(1) != y).sum())  # the ensemble is at least APGD-CE


def test_apgd_refuses_dlr_for_a_multilabel_model() -> None:
    from medrobust.models.classifier import Classifier, InputContract

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    model = Classifier(net, InputContract(classes=("A", "B", "C"), network_channels=1, intensity="unit",
                                          output_kind="multilabel"))
    with pytest.raises(ValueError, match="multi-label model takes loss=ce"):
        APGD(loss="dlr", steps=2)(model, torch.rand(2, 1, 8, 8), torch.zeros(2, 3, dtype=torch.long))
