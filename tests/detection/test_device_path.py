"""The detectors on the model's device: per batch, the squeezers, forward passes and distances
stay there and one (B, m) array comes back. The CPU tests play the device with
:mod:`tests.host_sync`; the ``gpu`` tests run on a CUDA device (skipped without one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.detection.reference import ReferenceDetector
from medrobust.detection.squeeze import SqueezeDetector
from medrobust.models import build_classifier

from ..host_sync import host_reads, on_device

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]


def images(n: int = 5, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return build_classifier("small-cnn", CLASSES, 32).eval()


def test_squeeze_distances_read_back_once_per_batch(cnn) -> None:
    detector = SqueezeDetector(squeezers=("bits:bits=5", "median:size=2", "tv:weight=0.1"), batch_size=2)
    x = images(5)
    with host_reads() as reads:
        d = detector.distances(cnn, on_device(x))
    range_check = [r for r in reads if "image_batch.py" in r]
    results = [r for r in reads if r.startswith("cpu ")]
    tv_checks = [r for r in reads if r.startswith("__int__") and "total_variation.py" in r]
    assert len(results) == 3  # one (B, m) array per batch of 2, 2 and 1 images
    assert sorted(reads) == sorted(range_check + results + tv_checks) and len(range_check) == 2, reads
    np.testing.assert_array_equal(d, detector.distances(cnn, x))


def test_squeeze_distances_run_on_the_device_of_a_plain_module() -> None:
    """A model without a ``device`` attribute runs where its parameters are (it used to be fed the
    CPU whatever its device)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 3))
    detector = SqueezeDetector(squeezers=("bits:bits=4",), batch_size=4)
    seen = []
    net.register_forward_pre_hook(lambda module, args: seen.append(args[0].device))
    d = detector.distances(net, images(3))
    assert d.shape == (3, 1) and seen and all(dev == next(net.parameters()).device for dev in seen)


@pytest.fixture
def full_fp32():
    """Full float32 convolutions on the GPU (cuDNN may use TF32 by default), so that a comparison
    with the CPU measures the code, not the precision mode."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.gpu
def test_squeeze_detector_on_cuda_matches_the_cpu(cnn, full_fp32) -> None:
    detector = SqueezeDetector(squeezers=("bits:bits=5", "median:size=2", "jpeg:quality=75", "tv:weight=0.1"),
                               batch_size=3)
    x = images(7)
    gpu_model = build_classifier("small-cnn", CLASSES, 32).eval().cuda()
    gpu_model.load_state_dict(cnn.state_dict())
    on_gpu = detector.distances(gpu_model, x)  # images on the host, model on the GPU
    assert np.allclose(on_gpu, detector.distances(cnn, x), atol=1e-4)
    assert np.allclose(detector.distances(gpu_model, x.cuda()), on_gpu, atol=1e-6)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 3)).cuda()
    assert detector.distances(plain, x).shape == (7, 4)


@pytest.mark.gpu
def test_reference_detector_on_cuda_matches_the_cpu(cnn, full_fp32) -> None:
    x = images(4)
    candidate = (x + 0.05 * torch.rand(x.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    gpu_model = build_classifier("small-cnn", CLASSES, 32).eval().cuda()
    gpu_model.load_state_dict(cnn.state_dict())
    detector = ReferenceDetector()
    cpu_scores = detector.score(cnn, candidate, x)
    assert np.allclose(detector.score(gpu_model, candidate.cuda(), x.cuda()), cpu_scores, atol=1e-4)
