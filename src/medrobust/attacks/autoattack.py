"""AutoAttack, the standard version (Croce & Hein, ICML 2020): an ensemble run in sequence, each
attack only on the images every earlier one left correctly classified, so an image counts as robust
only when it survives them all — the figure RobustBench accepts.

=================  ====================================================================
APGD-CE            :class:`~medrobust.attacks.apgd.APGD`, cross-entropy, 100 steps
APGD-T             APGD with the targeted DLR loss, 9 targets (K - 1 when fewer), 100 steps each
FAB-T              not run (see below)
Square             :class:`~medrobust.attacks.square.SquareAttack`, 5000 queries, p_init 0.8
=================  ====================================================================

FAB-T (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a fast adaptive
boundary attack") is not implemented: it is a minimum-norm attack that walks along projections
onto a linearised decision boundary, clipped to the box, and so does not fit medrobust's
fixed-budget engine. Its absence can only overstate accuracy, never understate it; in the
AutoAttack paper's evaluations FAB-T, third in the sequence, changed the robust accuracy of very few
models (APGD-T and Square usually break what it would). The report says "AutoAttack without FAB-T"
wherever this figure is shown.

A model without gradients (a black box, ONNX) meets Square alone, and the run says so. A model whose
forward pass is random is attacked with the expectation over its draws (the gradient attacks read
``model.eot_samples``: :class:`~medrobust.models.eot.EOTModel` sets it).

After a call, :attr:`broken_by` holds per image which member broke it (``"clean"``: the model was
wrong before any attack, ``""``: none did).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from medrobust.attacks.apgd import APGD
from medrobust.attacks.decisions import gets_wrong
from medrobust.attacks.engine import Attack
from medrobust.attacks.registry import register_attack
from medrobust.attacks.square import SquareAttack

MEMBERS = ("apgd-ce", "apgd-t", "square")
NOT_RUN = {"fab-t": "not implemented: a minimum-norm attack, outside medrobust's fixed-budget engine"}


@register_attack("autoattack")
class AutoAttack(Attack):
    """AutoAttack standard without FAB-T (see the module docstring).

    Args:
        eps: budget in ``norm``. Default 8/255.
        norm: ``"linf"`` or ``"l2"``. Default ``"linf"``.
        steps: APGD steps per run. Default 100.
        queries: Square's queries per image. Default 5000.
        n_target_classes: APGD-T's targets. Default 9 (K - 1 when fewer).
        seed: seed of every member's randomness. Default 0.
        quantize_bits: the storage grid (None: floats, as RobustBench). Default 8.

    Shape:
        - x: (B, C, H, W) float in [0, 1]; y: (B,) true labels.
        - Output: (B, C, H, W) in [0, 1], within ``eps`` of ``x``.

    Example:

    >>> import torch
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32)
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> attack = AutoAttack(eps=4 / 255, steps=4, queries=10)
    >>> x_adv = attack(model, x, torch.tensor([0, 2]))
    >>> x_adv.shape, len(attack.broken_by), bool((x_adv - x).abs().max() <= 4 / 255 + 1e-6)
    (torch.Size([2, 1, 32, 32]), 2, True)
    """

    name = "autoattack"
    needs_gradients = False  # a black box meets Square alone

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", steps: int = 100, queries: int = 5000,
                 n_target_classes: int = 9, seed: int = 0, quantize_bits: int | None = 8) -> None:
        super().__init__(seed=seed, quantize_bits=quantize_bits)
        if norm == "l2" and queries:
            raise ValueError("autoattack norm l2: medrobust's Square attack is L-inf only; use norm linf, or "
                             "apgd with norm l2")
        self.eps, self.norm, self.steps, self.queries = float(eps), norm, int(steps), int(queries)
        self.n_target_classes = int(n_target_classes)
        self.members = {
            "apgd-ce": APGD(eps=eps, steps=steps, norm=norm, loss="ce", seed=seed, quantize_bits=quantize_bits),
            "apgd-t": APGD(eps=eps, steps=steps, norm=norm, targeted=True, n_target_classes=n_target_classes,
                           seed=seed, quantize_bits=quantize_bits),
            "square": SquareAttack(eps=eps, queries=queries, p_init=0.8, seed=seed, quantize_bits=quantize_bits),
        }
        self.broken_by: np.ndarray = np.zeros(0, dtype=str)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = x.clone()
        with torch.no_grad():
            broken = gets_wrong(model, model(x), y)
        broken_by = np.where(broken.cpu().numpy(), "clean", "").astype(object)
        for name, attack in self.members.items():
            if attack.needs_gradients and not getattr(model, "differentiable", True):
                continue  # a black box: its gradients do not exist
            todo = (~broken).nonzero()[:, 0]
            if len(todo) == 0:
                break
            x_adv = attack.perturb(model, x[todo], y[todo], generator)  # in eval mode, with gradients: our __call__
            with torch.no_grad():
                wrong = gets_wrong(model, model(x_adv), y[todo])
            out[todo[wrong]] = x_adv[wrong].to(out.dtype)
            broken[todo[wrong]] = True
            broken_by[todo[wrong].cpu().numpy()] = name
        self.broken_by = broken_by.astype(str)
        return out
