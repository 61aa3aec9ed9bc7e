"""Whether a model gets images wrong, by its own decision rule (the argmax of a softmax model, the
threshold of a binary or multi-label one), as the attacks that stop at the first success judge it."""

from __future__ import annotations

import torch
import torch.nn as nn

from medrobust.models.output_kind import OutputKind


def gets_wrong(model: nn.Module, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the decision of ``model`` on ``logits`` (its raw outputs) differs from ``y`` —
    for a multi-label model, in any finding; an output that is not finite is never right.

    Args:
        model: the model (its ``output_kind`` and contract threshold decide).
        logits: (B, K) its outputs ((B, 1) binary).
        y: (B,) labels or (B, K) 0/1 findings.

    Returns:
        (B,) bool, on ``logits``' device.
    """
    kind = getattr(model, "output_kind", OutputKind.SOFTMAX)
    threshold = float(getattr(getattr(model, "contract", None), "threshold", 0.5))
    wrong = kind.decide(logits, threshold) != y
    return wrong.flatten(1).any(1) if wrong.ndim > 1 else wrong
