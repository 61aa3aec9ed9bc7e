"""Running a model for its answers: eval mode, no gradients, in batches, results on the CPU.

Every room that only *reads* a model (a classifier's ``predict``, the detectors, the runner's
checks) asks :func:`batched_logits`, so they all put the model in eval mode (dropout off,
batch-norm running statistics) the same way and give its mode back afterwards, even on error
(torchattacks' convention). :func:`eval_mode` is that mode switch alone, for callers that need
gradients (the attack engine, Grad-CAM).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; its former train/eval mode restored on leaving."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device | None:
    """Where ``model`` runs: its ``device`` attribute (a Classifier's), else its first parameter's
    or buffer's device, else None (a module without tensors runs wherever its input is)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return None


@torch.no_grad()
def batched_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``model``'s outputs on images ``x`` (N, C, H, W): ``cat_i model(x[i*b : (i+1)*b])`` as float32 on
    the CPU, computed in eval mode without gradients, each batch moved to the model's device.

    ``x`` must hold at least one image (the width of an empty answer is unknown here).
    """
    if len(x) == 0:
        raise ValueError("no images to run the model on")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = model_device(model)
    with eval_mode(model):
        out = [model(x[i : i + batch_size] if device is None else x[i : i + batch_size].to(device)).float().cpu()
               for i in range(0, len(x), batch_size)]
    return torch.cat(out)
