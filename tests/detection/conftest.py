"""Fixtures for the detection tests: a classifier whose answer depends only on the image
mean (so a test sets the label and confidence without touching SSIM), hand-made image pairs,
and a large set of clean phantoms for calibration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.models.classifier import Classifier, InputContract

CLASSES = ("Normal", "Pneumonia", "Pneumothorax")


class MeanLogits(nn.Module):
    """logits = [0, slope * (mean(x) - offset), -30]: class 0 below ``offset``, class 1 above;
    the confidence is set by how far the mean is from ``offset``."""

    def __init__(self, slope: float = 300.0, offset: float = 0.5) -> None:
        super().__init__()
        self.slope = slope
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.double().mean(dim=(1, 2, 3))
        z = self.slope * (m - self.offset)
        return torch.stack([torch.zeros_like(z), z, torch.full_like(z, -30.0)], dim=1).float()


def mean_classifier(slope: float = 300.0, offset: float = 0.5) -> Classifier:
    contract = InputContract(classes=CLASSES, input_size=None, stored_channels=1, network_channels=1,
                             intensity="unit")
    return Classifier(MeanLogits(slope, offset), contract, arch="mean-logits").eval()


@pytest.fixture
def make_mean_classifier():
    """The factory ``make_mean_classifier(slope=300, offset=0.5) -> Classifier``."""
    return mean_classifier


@pytest.fixture(scope="session")
def clean_phantoms():
    """2400 clean 32 px phantoms (another seed than the training set), shuffled into a
    calibration half and a held-out half of 1200 each."""
    from medrobust.data.phantom import PhantomDataset

    x, _, _ = PhantomDataset(per_class=800, size=32, seed=2024, fractions=None).load(batch_size=600)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x = x[order]
    return x[:1200], x[1200:]
