"""One batch of adversarial images, crafted and scored the same way everywhere: by the
runner's resumable attack stages and by ``mr.attack`` (and so by ``medrobust attack``).

For a batch that starts at image ``start`` of a stream, the attack's random generator is
seeded with ``seed + start``, so the same images, model, attack and seed give the same
adversarial images however they are reached. The result is rounded to the 8-bit grid before
it is scored: the prediction reported is the prediction on the image a PNG stores. Predictions
use the target's own decision rule (:meth:`Classifier.predict`: the threshold of a binary or
multi-label model), never an argmax of probabilities.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from medrobust.detection.model_outputs import ModelOutputs, model_outputs
from medrobust.execution.pixels import quantise_8bit


def craft_batch(attack, crafter: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int,
                start: int) -> tuple[torch.Tensor, ModelOutputs]:
    """``(x_adv on the 8-bit grid, the target's outputs on it)`` for images ``x`` (B, C, H, W)
    in [0, 1] with labels ``y``; crafted on ``crafter`` (the target itself for white-box). The
    outputs (decisions, probabilities, confidence) come from one forward pass."""
    generator = attack.make_generator(x.device, seed + start)
    x_adv = quantise_8bit(attack(crafter, x, y, generator=generator)).cpu()
    return x_adv, model_outputs(target, x_adv)
