"""The defenses on a CUDA device (skipped without one): same results as on the CPU."""

from __future__ import annotations

import pytest
import torch

from medrobust.defenses.defended import DefendedClassifier
from medrobust.defenses.jpeg import jpeg
from medrobust.defenses.registry import build_defense
from medrobust.defenses.squeezers import median_filter
from medrobust.defenses.total_variation import tv_denoise
from medrobust.defenses.tvm import RandomizedTVM

from ..host_sync import cuda_syncs
from .helpers import make_linear_classifier, psnr

pytestmark = pytest.mark.gpu


def test_tv_jpeg_and_median_match_the_cpu(phantoms) -> None:
    gpu = phantoms.cuda()
    assert psnr(tv_denoise(gpu, 0.1).cpu(), tv_denoise(phantoms, 0.1)) > 60
    assert torch.equal(jpeg(gpu, 50).cpu(), jpeg(phantoms, 50))
    assert torch.equal(median_filter(gpu, 3).cpu(), median_filter(phantoms, 3))


def test_randomized_tvm_is_seeded_on_the_gpu(phantoms) -> None:
    gpu = phantoms.cuda()
    a, b = RandomizedTVM(seed=1)(gpu), RandomizedTVM(seed=1)(gpu)
    assert a.device.type == "cuda" and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_defended_classifier_on_the_gpu(phantoms) -> None:
    classifier = make_linear_classifier(size=64).cuda()
    model = DefendedClassifier(build_defense("jpeg+tvm"), classifier).cuda()
    x = phantoms.cuda().requires_grad_(True)
    loss = model(x).sum()
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.device.type == "cuda" and torch.isfinite(grad).all()




@pytest.mark.parametrize("spec", ["tv", "tv:method=chambolle", "jpeg:quality=50", "bits", "median:size=3",
                                  "jpeg+tv", "none"])
def test_every_deterministic_defense_stays_on_the_gpu_and_matches_the_cpu(phantoms, spec) -> None:
    defense = build_defense(spec)
    gpu = defense(phantoms.cuda())
    assert gpu.device.type == "cuda" and gpu.dtype == phantoms.dtype and gpu.shape == phantoms.shape
    assert psnr(gpu.cpu(), defense(phantoms)) > 60


def test_tv_on_the_gpu_synchronises_at_most_once_per_check(phantoms) -> None:
    from medrobust.defenses.total_variation import CHECK_EVERY

    x = phantoms.cuda()
    tv_denoise(x, 0.1, max_iter=60)  # warm-up
    out, syncs = cuda_syncs(lambda: tv_denoise(x, 0.1, max_iter=60))
    assert out.device.type == "cuda" and syncs <= 60 // CHECK_EVERY + 1


def test_an_attack_step_through_median_never_synchronises(phantoms) -> None:
    from medrobust.attacks import PGD
    from medrobust.models.batched_prediction import eval_mode

    model = DefendedClassifier(build_defense("median+bits"), make_linear_classifier(size=64)).cuda()
    x, y = phantoms.cuda(), torch.tensor([0, 1, 2, 0, 1, 2], device="cuda")
    attack = PGD(steps=3)

    def run():
        with eval_mode(model), torch.enable_grad():
            return attack.perturb(model, x, y, torch.Generator(device="cuda").manual_seed(0))

    run()  # warm-up
    x_adv, syncs = cuda_syncs(run)
    assert syncs == 0 and x_adv.device.type == "cuda"
