"""A model as a gradient attack should see it, when the model itself would mislead the attack:

* ``eot_samples`` > 1 — its forward pass is random (a dropout left on, a random preprocessing
  inside it): the engine averages each gradient over that many draws (expectation over
  transformation, Athalye et al., ICML 2018);
* ``from_probabilities`` — it returns probabilities, not logits: its outputs are turned back into
  logits (``log p`` for a softmax, the logit function for a sigmoid;
  :func:`~medrobust.models.probability_logits.logits_from_probabilities`), so the cross-entropy is
  not squashed twice and its gradient does not vanish where the model is confident.

Its decisions are the model's own (an argmax of ``log p`` is an argmax of ``p``).
"""

from __future__ import annotations

import torch
from torch import nn

from medrobust.models.probability_logits import FinalActivation, logits_from_probabilities


class AttackView(nn.Module):
    """``model`` seen through the corrections of the module docstring.

    Args:
        model: the model (a Classifier or any module returning its outputs).
        eot_samples: gradient draws to average (1: none). Default 1.
        from_probabilities: ``"softmax"`` or ``"sigmoid"`` when the model returns probabilities.

    Shape:
        - x: (B, C, H, W) float in [0, 1].
        - Output: (B, K) logits.
    """

    def __init__(self, model: nn.Module, eot_samples: int = 1,
                 from_probabilities: FinalActivation | None = None) -> None:
        super().__init__()
        self.model = model
        self.eot_samples = max(1, int(eot_samples))
        self.from_probabilities = from_probabilities

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return logits_from_probabilities(out, self.from_probabilities) if self.from_probabilities else out

    # what the attacks read of a model
    @property
    def classes(self) -> list[str]:
        return list(getattr(self.model, "classes", []))

    @property
    def output_kind(self):  # noqa: ANN201 (an OutputKind)
        from medrobust.models.output_kind import OutputKind

        return getattr(self.model, "output_kind", OutputKind.SOFTMAX)

    @property
    def contract(self):  # noqa: ANN201 (an InputContract or None)
        return getattr(self.model, "contract", None)

    @property
    def differentiable(self) -> bool:
        return bool(getattr(self.model, "differentiable", True))
