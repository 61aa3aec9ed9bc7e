"""One batch of adversarial images, crafted and scored the same way everywhere: by the
runner's resumable attack stages and by ``mr.attack`` (and so by ``medrobust attack``).

For a batch that starts at image ``start`` of a stream, the attack's random generator is
seeded with ``seed + start``, so the same images, model, attack and seed give the same
adversarial images however they are reached. The result is rounded to the stored grid before
it is scored (8-bit grey levels, or integer HU for CT): the prediction reported is the prediction
on the image a PNG or DICOM stores. Predictions
use the target's own decision rule (:meth:`Classifier.predict`: the threshold of a binary or
multi-label model), never an argmax of probabilities.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from medrobust.data.stored_grid import EIGHT_BIT, StoredGrid
from medrobust.detection.model_outputs import ModelOutputs, model_outputs


def craft_batch(attack, crafter: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int,
                start: int, grid: StoredGrid = EIGHT_BIT) -> tuple[torch.Tensor, ModelOutputs]:
    """One batch of adversarial images, on the stored grid, and the target's outputs on them.

    Args:
        attack: an :class:`~medrobust.attacks.engine.Attack`.
        crafter: the model the images are crafted on (the target itself for white-box).
        target: the model whose outputs are reported.
        x: the clean images, on the crafter's device.
        y: their labels (class indices, or 0/1 findings for a multi-label model).
        seed: the stream's seed.
        start: the batch's first image in its stream: the attack's generator is seeded with
            ``seed + start``, so a batch gives the same images wherever it is crafted.
        grid: the stored grid the images are rounded to. Default the 8-bit grid (CT: integer HU).

    Returns:
        ``(x_adv, outputs)``: the adversarial images rounded to ``grid``, on the CPU, and
        the target's :class:`~medrobust.detection.model_outputs.ModelOutputs` on them
        (decisions, probabilities, confidence) from one forward pass.

    Shape:
        - x: (B, C, H, W) float in [0, 1] (volumes: (B, C, D, H, W)).
        - y: (B,) int64, or (B, K) 0/1 for a multi-label model.
        - x_adv: the shape of ``x``, float32 in [0, 1] on ``grid``.
    """
    generator = attack.make_generator(x.device, seed + start)
    x_adv = grid.round(attack(crafter, x, y, generator=generator)).cpu()
    return x_adv, model_outputs(target, x_adv)
