"""An ensemble of classifiers as one Classifier: the usual surrogate for transfer attacks.

``z(x) = sum_i w_i z_i(x)`` with ``sum_i w_i = 1``: the weighted mean of the members' logits
(Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR 2018, section 3.2; Liu et
al., "Delving into Transferable Adversarial Examples", ICLR 2017). Crafting on several
surrogates at once finds directions that fool models the attacker does not have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from medrobust.models.classifier import Classifier, InputContract
from medrobust.models.output_kind import OutputKind


class EnsembleClassifier(Classifier):
    """A weighted average of classifiers' **logits**: ``z(x) = sum_i w_i z_i(x)``, ``sum_i w_i = 1``.

    The logit ensemble of Dong et al. (MI-FGSM, CVPR 2018), the usual surrogate for transfer
    attacks. For softmax members it gives the same probabilities as averaging
    log-probabilities (``log softmax(z) = z - logsumexp(z)`` differs per image by a constant);
    for binary and multilabel members it averages log-odds. Each member applies its own input
    contract (size, channels, intensity) to the stored images, so members with different input
    sizes or channel counts mix freely.

    The ensemble takes the first member's contract (classes, output kind, threshold). All
    members must share class names, output kind and stored channels. ``differentiable`` is
    True only if every member is: an ensemble with a black-box member cannot be attacked
    white-box.
    """

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        models = list(models)
        if not models:
            raise ValueError("an ensemble needs at least one model")
        for i, m in enumerate(models):
            if not (hasattr(m, "classes") and hasattr(m, "output_kind")):
                raise TypeError(f"ensemble member {i} ({type(m).__name__}) is not a Classifier (it has no classes "
                                "or output kind); wrap the network with medrobust.models.build_classifier or "
                                "load_classifier first")
        first = models[0]
        for i, m in enumerate(models[1:], start=1):
            if list(m.classes) != list(first.classes):
                raise ValueError(f"ensemble member {i} has classes {list(m.classes)} but member 0 has "
                                 f"{list(first.classes)}; all members must predict the same classes in the same order")
            if OutputKind.parse(m.output_kind) is not OutputKind.parse(first.output_kind):
                raise ValueError(f"ensemble member {i} is a {OutputKind.parse(m.output_kind).value} model but member 0 "
                                 f"is {OutputKind.parse(first.output_kind).value}; all members must share the output kind")
            if getattr(m, "input_channels", 1) != getattr(first, "input_channels", 1):
                raise ValueError(f"ensemble member {i} takes {m.input_channels}-channel images but member 0 takes "
                                 f"{first.input_channels}; all members must read the same stored images")
        if weights is None:
            w = [1.0 / len(models)] * len(models)
        else:
            w = [float(v) for v in weights]
            if len(w) != len(models):
                raise ValueError(f"{len(w)} ensemble weights for {len(models)} models; give one weight per model")
            if any(v < 0 or not math.isfinite(v) for v in w) or sum(w) <= 0:
                raise ValueError(f"ensemble weights must be non-negative and not all zero, got {w}")
            w = [v / sum(w) for v in w]
        contract = getattr(first, "contract", None) or InputContract(
            classes=tuple(first.classes), output_kind=first.output_kind, stored_channels=first.input_channels)
        super().__init__(nn.ModuleList(models), contract, arch="ensemble",
                         metadata={"members": [getattr(m, "arch", None) or type(m).__name__ for m in models],
                                   "weights": w, "combination": "weighted mean of logits"})
        self.weights = w
        self.differentiable = all(getattr(m, "differentiable", True) for m in models)

    @property
    def members(self) -> list[nn.Module]:
        return list(self.network)

    @property
    def device(self) -> torch.device:
        return getattr(self.network[0], "device", super().device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for weight, member in zip(self.weights, self.network):
            z = weight * member(x).float()
            out = z if out is None else out + z.to(out.device)
        assert out is not None
        return out
