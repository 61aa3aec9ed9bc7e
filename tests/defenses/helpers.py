"""Helpers shared by the defense tests."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from medrobust.models.classifier import Classifier, InputContract


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1]."""
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def make_linear_classifier(size: int = 16, classes: int = 3, channels: int = 1, seed: int = 0) -> Classifier:
    """A linear model on raw pixels ([0, 1], no resizing): logits = W x + b."""
    torch.manual_seed(seed)
    network = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, classes))
    contract = InputContract(classes=tuple(f"c{i}" for i in range(classes)), input_size=None,
                             stored_channels=channels, network_channels=channels, intensity="unit")
    return Classifier(network, contract).eval()
