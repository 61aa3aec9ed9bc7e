"""The attacker who knows the detectors as well as the defense: Carlini & Wagner, "Adversarial
examples are not easily detected: bypassing ten detection methods" (AISec 2017).

A detector is one more differentiable function of the image. Instead of the classification loss
alone, the attacker ascends, per image::

    objective(x) = J(f_D(x), y)  -  lambda * P(x)

with ``J`` the model's own loss (cross-entropy) on the defended model ``f_D`` (through the
defense's gradient routes), and ``P(x) >= 0`` the detectors' penalty, zero once every detector's
score is safely below its threshold (the caller builds it; for a guard,
:func:`medrobust.execution.guard_units.detector_penalty`). ``lambda = 0`` is the plain PGD
attack on the defended model, which ignores the detectors; a larger ``lambda`` trades
misclassification for staying unflagged. Steps are the engine's PGD steps (signed gradient,
projection on the L-inf ball and [0, 1]).

An image is won when its **stored** version (rounded to the 8-bit grid inside the ball) is one
the guard accepts and gets wrong (``evades``); the attack keeps, per image, the first iterate
that wins, else the last one: a PGD step after a win may lose it again.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from medrobust.attacks.budget import quantize_within
from medrobust.attacks.gradient_attacks import PGD


class DetectorAwarePGD(PGD):
    """PGD on ``J(f_D(x), y) - lambda * P(x)`` (module docstring); not in the attack registry:
    its penalty and its success test are functions the caller gives.

    Args:
        eps: the L-inf budget in [0, 1] image units. Default 8/255.
        steps: PGD iterations, at least 1. Default 20.
        alpha: the step size. Default None: ``2.5 eps / steps`` (Madry et al.'s rule).
        lam: the detectors' weight ``lambda`` >= 0. Default 1.
        penalty: ``penalty(x) -> (B,)`` differentiable, >= 0, zero when the detectors are content.
            Default None: no detector term (then ``lam`` is ignored).
        evades: ``evades(x_stored, y) -> (B,) bool``, without gradients: the guard accepts the
            stored image and gets it wrong. Default None: no image is kept early; the last
            iterate is returned.
        random_start: start from a uniform point of the ball. Default True.
        seed: the random start's seed when the call is given no generator. Default 0.
        quantize_bits: the storage grid. Default 8.

    Shape:
        - x: (B, C, H, W) float in [0, 1]; y: (B,) int64 labels.
        - Output: (B, C, H, W), in [0, 1], within ``eps`` of ``x``, on the grid.

    Example:

    >>> import torch
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32).eval()
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> attack = DetectorAwarePGD(eps=4 / 255, steps=3, lam=10.0, penalty=lambda z: (z - 0.5).abs().mean((1, 2, 3)))
    >>> x_adv = attack(model, x, torch.tensor([0, 2]))
    >>> bool((x_adv - x).abs().max() <= 4 / 255 + 1e-6)
    True
    """

    name = "detector-aware-pgd"

    def __init__(self, eps: float = 8 / 255, steps: int = 20, alpha: float | None = None, lam: float = 1.0,
                 penalty: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 evades: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 random_start: bool = True, seed: int = 0, quantize_bits: int | None = 8) -> None:
        super().__init__(eps=eps, steps=steps, alpha=alpha if alpha is not None else 2.5 * eps / steps,
                         random_start=random_start, seed=seed, quantize_bits=quantize_bits)
        if not float(lam) >= 0:
            raise ValueError(f"lam (the detectors' weight) must be >= 0, got {lam}")
        self.lam = float(lam)
        self._penalty = penalty
        self._evades = evades

    def describe(self) -> dict[str, object]:
        return {k: v for k, v in super().describe().items() if k not in ("_penalty", "_evades")}

    def gradient(self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The engine's gradient of ``J`` (EOT included), minus ``lambda`` times the penalty's."""
        grad = super().gradient(model, x_adv, y, generator)
        if self.lam == 0 or self._penalty is None:
            return grad
        x_var = x_adv.detach().requires_grad_(True)
        penalty = self._penalty(x_var)
        if not penalty.requires_grad:  # every detector content and no path to the image
            return grad
        return grad - self.lam * torch.autograd.grad(penalty.sum(), x_var)[0]

    def _stored(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_bits is None or self.eps * (2**self.quantize_bits - 1) < 1.0 - 1e-6:
            return x_adv
        return quantize_within(x_adv, x, self.budget, self.quantize_bits)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self._evades is None:
            return super().perturb(model, x, y, generator)
        x_adv = self.init(x, generator)
        kept = self._stored(x.clone(), x)
        won = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        with self.execution.running(model, x):
            for _ in range(self.steps):
                grad = self.gradient(model, x_adv, y, generator)
                x_adv = self.budget.project(self.budget.step(x_adv, grad, self.alpha), x).detach()
                stored = self._stored(x_adv, x)
                with torch.no_grad():
                    new = self._evades(stored, y).to(x.device) & ~won
                kept[new], won = stored[new], won | new
        return torch.where(won.view(-1, *([1] * (x.ndim - 1))), kept, self._stored(x_adv, x))
