"""What a detector reads from a model: probabilities, top-class confidence and the decision.

Both detectors look at the model only through its outputs. For a
:class:`~medrobust.models.classifier.Classifier` the output kind decides the maths
(softmax rows; binary ``[1 - sigmoid, sigmoid]`` with the model's threshold; multilabel
per-finding sigmoids). A plain ``nn.Module`` returning logits is read as softmax over its
outputs, with classes named by index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medrobust.models.batched_prediction import batched_logits, eval_mode
from medrobust.models.output_kind import NO_ANSWER, NO_ANSWER_NAME, OutputKind, decision_name


@dataclass(frozen=True)
class ModelOutputs:
    """A model's answer on N images, on the CPU.

    ``probabilities`` (N, K); ``confidence`` (N,) the probability of the predicted label (the
    study's C: top-class confidence; multilabel: the least confident per-finding decision);
    ``labels`` (N,) class indices or (N, K) 0/1 findings; ``label_names`` one readable name
    per image.
    """

    probabilities: torch.Tensor
    confidence: torch.Tensor
    labels: torch.Tensor
    label_names: list[str]


def model_outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> ModelOutputs:
    """Run ``model`` on images ``x`` (N, C, H, W) in eval mode, in batches, without gradients."""
    kind = getattr(model, "output_kind", OutputKind.SOFTMAX)
    own_logits = getattr(model, "logits", None)  # a Classifier's (batched_logits, plus an empty answer's width)
    logits = own_logits(x, batch_size=batch_size) if callable(own_logits) else batched_logits(model, x, batch_size)
    classes = list(getattr(model, "classes", [str(k) for k in range(logits.shape[1])]))
    contract = getattr(model, "contract", None)
    threshold = float(getattr(contract, "threshold", 0.5))
    probabilities = kind.probabilities(logits)
    labels = kind.decide(logits, threshold)
    confidence = kind.confidence(logits, threshold)
    if kind is OutputKind.MULTILABEL:
        names = [NO_ANSWER_NAME if int(row[0]) == NO_ANSWER else
                 "+".join(c for c, on in zip(classes, row.tolist()) if on) or "none" for row in labels]
    else:
        names = [decision_name(classes, int(k)) for k in labels]
    return ModelOutputs(probabilities, confidence, labels, names)


def probabilities_on_device(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, K) probabilities of ``model`` on the batch ``x``, left where the model computed them
    (one forward pass in eval mode, no gradients; the caller moves ``x`` to the model's device and
    reads the result back when the batch is done). The same maths as :func:`model_outputs`."""
    kind = getattr(model, "output_kind", OutputKind.SOFTMAX)
    with torch.no_grad(), eval_mode(model):
        return kind.probabilities(model(x).float())


def labels_differ(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the decisions differ (for multilabel, in any finding)."""
    if a.shape != b.shape:
        raise ValueError(f"decision shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = a != b
    return diff.reshape(len(diff), -1).any(dim=1)
