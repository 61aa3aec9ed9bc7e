"""Grad-CAM leaves the caller's model as it found it: MONAI's CAM registers hooks and keeps no
handle to them, so medrobust removes them (a model with backward hooks cannot be traced, and
each heatmap would otherwise add two more)."""

from __future__ import annotations

import torch

from medrobust.evaluation.gradcam import gradcam
from medrobust.models import build_classifier


def test_gradcam_removes_its_hooks_and_keeps_the_users():
    model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32).eval()
    mine = model.register_forward_hook(lambda *_: None)
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        maps = gradcam(model, x)
        assert maps is not None and maps.shape == (3, 32, 32)
        assert 0.0 <= maps.min() and maps.max() <= 1.0
    hooks = {name: (len(m._forward_hooks), len(m._backward_hooks)) for name, m in model.named_modules()}
    assert hooks[""] == (1, 0) and all(h == (0, 0) for name, h in hooks.items() if name)
    mine.remove()
    torch.jit.trace(model, x)  # refused while a backward hook is left on a layer
