"""The defenses on a device, played on the CPU by device-resident stand-in tensors
(:mod:`tests.host_sync`): the solvers read back one number per convergence check and nothing
else, JPEG crosses to the host once, and a model behind a differentiable or squeezing defense
reads nothing back in an attack step. The real-GPU counterparts are in ``test_gpu.py``."""

from __future__ import annotations

import math

import pytest
import torch

from medrobust.attacks import PGD
from medrobust.defenses import total_variation as tv_module
from medrobust.defenses.defended import DefendedClassifier
from medrobust.defenses.registry import build_defense
from medrobust.defenses.total_variation import tv_denoise
from medrobust.defenses.tvm import tvm
from medrobust.models.batched_prediction import eval_mode

from ..host_sync import host_reads, on_device, on_host
from .helpers import make_linear_classifier


@pytest.fixture(scope="module")
def mixed() -> torch.Tensor:
    """Six 40 px images from flat to noisy: they converge at different checks, so the solvers drop
    images from the batch on the way."""
    base = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(1))
    return torch.cat([0.5 + (base - 0.5) * a for a in (0.0, 0.02, 0.1, 0.3, 0.6, 1.0)])


@pytest.mark.parametrize("method", ["fgp", "chambolle"])
def test_tv_reads_one_number_per_convergence_check(mixed: torch.Tensor, method: str) -> None:
    with host_reads() as reads:
        out = tv_denoise(on_device(mixed), 0.1, max_iter=60, method=method)
    checks = math.ceil(60 / tv_module.CHECK_EVERY)
    assert 0 < len(reads) <= checks and all(r.startswith("__int__") for r in reads), reads
    assert torch.equal(on_host(out), tv_denoise(mixed, 0.1, max_iter=60, method=method))


def test_tvm_reads_one_number_per_convergence_check(mixed: torch.Tensor) -> None:
    def run(x: torch.Tensor) -> torch.Tensor:
        return tvm(x, 0.3, 0.1, 100, 2e-3, torch.Generator().manual_seed(0))

    with host_reads() as reads:
        out = run(on_device(mixed))
    assert 0 < len(reads) <= 100 // 5 and all(r.startswith("__int__") for r in reads), reads
    assert torch.equal(on_host(out), run(mixed))


def test_the_range_check_is_the_only_read_of_a_squeezer_and_can_be_skipped(mixed: torch.Tensor) -> None:
    for spec in ("bits", "median:size=3", "bits+median"):
        defense = build_defense(spec)
        with host_reads() as checked:
            defense(on_device(mixed))
        with host_reads() as unchecked:
            out = defense(on_device(mixed), check_range=False)
        assert checked and all("image_batch.py" in r for r in checked), checked
        assert unchecked == [] and torch.equal(on_host(out), defense(mixed))


def test_jpeg_crosses_to_the_host_once_and_returns_on_the_input_device(mixed: torch.Tensor) -> None:
    with host_reads() as reads:
        out = build_defense("jpeg:quality=50")(on_device(mixed), check_range=False)
    assert len(reads) == 1 and reads[0].startswith("cpu ")
    assert out.device == mixed.device and torch.equal(out, build_defense("jpeg:quality=50")(mixed))


@pytest.mark.parametrize("spec", ["median", "bits", "median+bits", "none"])
def test_an_attack_step_through_a_defense_reads_nothing_back(spec: str) -> None:
    model = DefendedClassifier(spec, make_linear_classifier(size=16))
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    attack = PGD(steps=3)

    def run(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with eval_mode(model), torch.enable_grad():
            return attack.perturb(model, images, labels, torch.Generator().manual_seed(0))

    with host_reads() as reads:
        x_adv = run(on_device(x), on_device(y))
    assert reads == []
    assert torch.equal(on_host(x_adv), run(x, y))


def test_a_defended_model_skips_the_range_check_but_a_defense_alone_keeps_it() -> None:
    model = DefendedClassifier("median", make_linear_classifier(size=16))
    outside = torch.full((1, 1, 16, 16), 2.0)
    assert model(outside).shape == (1, 3)  # like a Classifier's forward: shape and dtype only
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build_defense("median")(outside)
