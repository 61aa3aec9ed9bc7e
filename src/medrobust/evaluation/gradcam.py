"""Grad-CAM heatmaps (Selvaraju et al. 2017) through MONAI, for the report's pictures."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn as nn

from medrobust.models.batched_prediction import eval_mode

log = logging.getLogger(__name__)


def last_conv_layer(model: nn.Module) -> str | None:
    """Name of the last convolution (or DenseNet's last dense block) — Grad-CAM's usual target."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for n, _ in model.named_modules():
        if n.endswith("features.denseblock4"):
            return n
    return names[-1] if names else None


@contextmanager
def _hooks_removed_after(model: nn.Module) -> Iterator[None]:
    """Remove the forward and backward hooks added inside the block. MONAI's CAM registers hooks
    on the target layer and keeps no handle to them, so without this every heatmap would leave
    two more hooks on the caller's model (and a model with backward hooks cannot be traced)."""
    before = {name: (set(m._forward_hooks), set(m._backward_hooks), m._is_full_backward_hook)
              for name, m in model.named_modules()}
    try:
        yield
    finally:
        for name, m in model.named_modules():
            forward, backward, full = before.get(name, (set(), set(), None))
            for key in set(m._forward_hooks) - forward:
                del m._forward_hooks[key]
            for key in set(m._backward_hooks) - backward:
                del m._backward_hooks[key]
            m._is_full_backward_hook = full


def gradcam(model: nn.Module, x: torch.Tensor) -> np.ndarray | None:
    """(B, H, W) heatmaps in [0, 1] for the predicted class, or None when the model has no
    convolution to look at or gives no gradients (black-box models)."""
    if not getattr(model, "differentiable", True):
        return None
    layer = last_conv_layer(model)
    if layer is None:
        return None
    try:
        from monai.visualize import GradCAM

        with eval_mode(model), torch.enable_grad(), _hooks_removed_after(model):
            cam = GradCAM(nn_module=model, target_layers=layer)
            maps = cam(x=x.detach().clone().requires_grad_(True))
    except Exception as err:  # MONAI raises various errors for unusual architectures
        log.warning("Grad-CAM skipped: %s", err)
        return None
    maps = maps.detach().float().cpu()[:, 0]
    lo = maps.flatten(1).min(1).values.view(-1, 1, 1)
    hi = maps.flatten(1).max(1).values.view(-1, 1, 1)
    return ((maps - lo) / (hi - lo).clamp_min(1e-12)).numpy()
