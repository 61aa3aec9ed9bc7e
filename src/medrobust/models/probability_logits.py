"""Logits back from probabilities, for foreign models that end in a softmax or a sigmoid.

A :class:`~medrobust.models.classifier.Classifier` returns logits, and everything downstream
(``predict_proba``, the attack losses) applies the output kind's softmax or sigmoid itself. A
Keras or ONNX model that already ends in one would otherwise be squashed twice. When its
pre-activation output cannot be reached, the probabilities are inverted:

* softmax: ``z = log(p)``; ``softmax(log p) = p`` exactly, since a softmax is invariant to the
  per-row constant ``log sum exp(z)`` that was lost;
* sigmoid: ``z = log(p) - log(1 - p)`` (the logit function), the exact inverse of the sigmoid.

Caveat: ``p`` is clamped to ``[eps, 1 - eps]`` before the logarithm, so a saturated
probability (a softmax in float32 underflows to 0 around ``z_i - z_max < -87``) gives a
logit of ``log(eps)`` and a zero gradient there. Attacks on such a model see flat gradients
exactly where the model is most confident; a model that exposes its logits does not have
this problem.
"""

from __future__ import annotations

from typing import Literal

import torch

FinalActivation = Literal["softmax", "sigmoid"]

EPS = 1e-12


def logits_from_probabilities(p: torch.Tensor, activation: FinalActivation, eps: float = EPS) -> torch.Tensor:
    """Invert a final ``softmax`` (``log p``) or ``sigmoid`` (``log p - log1p(-p)``) on ``p``.

    Differentiable; see the module docstring for the clamping caveat.
    """
    p = p.float()
    if activation == "softmax":
        return torch.log(p.clamp(min=eps))
    if activation == "sigmoid":
        p = p.clamp(min=eps, max=1.0 - 1e-7)  # 1 - 1e-12 rounds to 1 in float32
        return torch.log(p) - torch.log1p(-p)
    raise ValueError(f"cannot invert the final activation {activation!r}; use 'softmax' or 'sigmoid'")
