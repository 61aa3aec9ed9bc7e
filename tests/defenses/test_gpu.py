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
