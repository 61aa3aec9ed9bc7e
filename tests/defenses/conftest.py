"""Fixtures for the defense tests: phantom radiographs and a small linear classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.data.phantom import generate_phantom
from medrobust.models.classifier import Classifier

from .helpers import make_linear_classifier


@pytest.fixture(autouse=True)
def single_intra_op_thread():
    """Run each defense test on one intra-op thread: on a shared, loaded 2-core machine OpenMP's
    barriers make many small tensor operations several times slower with two threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def phantoms() -> torch.Tensor:
    """Six 64 px phantoms (two per class) as (6, 1, 64, 64) float32 in [0, 1]."""
    images = [generate_phantom(k % 3, 64, seed=100 + k)[0] for k in range(6)]
    return torch.from_numpy(np.stack(images))[:, None]


@pytest.fixture(scope="session")
def noisy_phantoms(phantoms: torch.Tensor) -> torch.Tensor:
    """The phantoms plus Gaussian noise (sigma 0.05), clipped to [0, 1]."""
    g = torch.Generator().manual_seed(5)
    return (phantoms + 0.05 * torch.randn(phantoms.shape, generator=g)).clamp(0, 1)


@pytest.fixture
def linear_classifier() -> Classifier:
    return make_linear_classifier()
