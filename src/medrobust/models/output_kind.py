"""The three kinds of classifier output a chest X-ray model comes in, each with its
probabilities, its decision rule for metrics, and its loss for training and attacks.

* ``softmax`` — K mutually exclusive classes (the study: Normal / Pneumonia / Pneumothorax);
  probabilities ``softmax(z)``, decision ``argmax``, loss cross-entropy on class indices.
* ``binary`` — one logit for "positive" (e.g. pneumonia vs normal); classes are
  ``[negative, positive]``; probabilities ``[1 - sigmoid(z), sigmoid(z)]``, decision
  ``sigmoid(z) > threshold``, loss binary cross-entropy on 0/1 labels.
* ``multilabel`` — one independent logit per finding (ChestX-ray14-style); probabilities
  ``sigmoid(z)`` per finding, decision per finding ``> threshold``, loss binary cross-entropy
  on a (B, K) 0/1 target.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F

from medrobust.data.class_names import NO_ANSWER, NO_ANSWER_NAME, decision_name
from medrobust.specs.contract_names import output_kind_name

__all__ = ["NO_ANSWER", "NO_ANSWER_NAME", "OutputKind", "decision_name"]


class OutputKind(str, Enum):
    """What a classifier's logits mean (see the module docstring for each kind's rules).

    Attributes:
        SOFTMAX: ``"softmax"``, K mutually exclusive classes.
        BINARY: ``"binary"``, one logit for the positive of two classes ``[negative, positive]``.
        MULTILABEL: ``"multilabel"``, one independent logit per finding.
    """

    SOFTMAX = "softmax"
    BINARY = "binary"
    MULTILABEL = "multilabel"

    @classmethod
    def parse(cls, value: "str | OutputKind") -> "OutputKind":
        """The kind named ``value`` (a member or its name); ValueError naming the known ones."""
        if isinstance(value, cls):
            return value
        return cls(output_kind_name(value))

    def check_logits(self, logits: torch.Tensor, n_classes: int) -> None:
        """Refuse logits whose shape is not (B, K) ((B, 1) binary) for ``n_classes`` classes (ValueError)."""
        expected = 1 if self is OutputKind.BINARY else n_classes
        if logits.ndim != 2 or logits.shape[1] != expected:
            raise ValueError(
                f"a {self.value} model with {n_classes} classes must return logits of shape (B, {expected}), "
                f"got {tuple(logits.shape)}; check the output kind and the class names"
            )

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K) probabilities: softmax rows, or per-finding sigmoids; binary gives (B, 2)."""
        if self is OutputKind.SOFTMAX:
            return logits.softmax(dim=1)
        p = torch.sigmoid(logits)
        if self is OutputKind.BINARY:
            return torch.cat([1.0 - p, p], dim=1)
        return p

    def decide(self, logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """Predicted labels: (B,) class indices (softmax, binary) or (B, K) 0/1 (multilabel);
        :data:`NO_ANSWER` for an image whose logits are not all finite (every entry of its row
        for multilabel)."""
        broken = ~torch.isfinite(logits).reshape(len(logits), -1).all(dim=1)
        if self is OutputKind.SOFTMAX:
            decided = logits.argmax(dim=1)
        else:
            positive = (torch.sigmoid(logits) > threshold).long()
            decided = positive[:, 0] if self is OutputKind.BINARY else positive
        if decided.ndim == 2:
            broken = broken.unsqueeze(1)
        return torch.where(broken, torch.full_like(decided, NO_ANSWER), decided)  # no host sync

    def loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean",
             weight: torch.Tensor | None = None) -> torch.Tensor:
        """Training / attack loss. ``target``: (B,) class indices, (B,) 0/1, or (B, K) 0/1.

        ``reduction="none"`` gives one loss per image (summed over findings for multilabel),
        which attacks use to keep images independent in a batch.
        """
        if self is OutputKind.SOFTMAX:
            return F.cross_entropy(logits, target.long(), weight=weight, reduction=reduction)
        if self is OutputKind.BINARY:
            pos_weight = None if weight is None else (weight[1] / weight[0]).reshape(1)
            out = F.binary_cross_entropy_with_logits(
                logits[:, 0], target.float(), pos_weight=pos_weight, reduction="none"
            )
        else:
            out = F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=weight, reduction="none").sum(1)
        if reduction == "none":
            return out
        if reduction == "sum":
            return out.sum()
        return out.mean()

    def confidence(self, logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """(B,) probability of the predicted label (:meth:`decide` with ``threshold``: for a
        binary model whose threshold is not 0.5 that need not be the larger probability; for
        multilabel the least confident decision over findings)."""
        p = self.probabilities(logits)
        if self is OutputKind.MULTILABEL:
            return torch.maximum(p, 1.0 - p).min(dim=1).values
        if self is OutputKind.BINARY:
            return p.gather(1, self.decide(logits, threshold).view(-1, 1)).squeeze(1)
        return p.max(dim=1).values
