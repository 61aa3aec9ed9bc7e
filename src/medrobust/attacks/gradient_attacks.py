"""FGSM, PGD and MI-FGSM as configurations of the engine."""

from __future__ import annotations

from collections.abc import Sequence

from medrobust.attacks.engine import IterativeAttack
from medrobust.attacks.registry import register_attack


@register_attack("fgsm")
class FGSM(IterativeAttack):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one step of size eps,
    ``x_adv = Clip_[0,1](x + eps * sign(grad_x J(f(x), y)))``. L-infinity by default."""

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", targeted: bool = False,
                 findings: Sequence[str] | None = None, seed: int = 0, quantize_bits: int | None = 8) -> None:
        super().__init__(eps=eps, steps=1, alpha=eps, norm=norm, targeted=targeted, findings=findings,
                         seed=seed, quantize_bits=quantize_bits)


@register_attack("pgd")
class PGD(IterativeAttack):
    """Projected Gradient Descent (Madry et al. 2018): a random start in the ball, then
    ``steps`` signed-gradient steps of size ``alpha`` (default eps/4, i.e. 2/255 at 8/255),
    each projected back onto the ball and [0, 1]."""

    def __init__(self, eps: float = 8 / 255, steps: int = 10, alpha: float | None = None, norm: str = "linf",
                 random_start: bool = True, targeted: bool = False, findings: Sequence[str] | None = None,
                 seed: int = 0, quantize_bits: int | None = 8) -> None:
        super().__init__(eps=eps, steps=steps, alpha=alpha if alpha is not None else eps / 4, norm=norm,
                         random_start=random_start, targeted=targeted, findings=findings, seed=seed,
                         quantize_bits=quantize_bits)


@register_attack("mifgsm")
class MIFGSM(IterativeAttack):
    """Momentum Iterative FGSM (Dong et al. 2018): ``alpha = eps / T``,
    ``g_{t+1} = mu * g_t + grad / ||grad||_1``, ``x_{t+1} = Clip(x_t + alpha * sign(g_{t+1}))``;
    defaults T = 10, mu = 1.0."""

    def __init__(self, eps: float = 8 / 255, steps: int = 10, mu: float = 1.0, norm: str = "linf",
                 targeted: bool = False, findings: Sequence[str] | None = None, seed: int = 0,
                 quantize_bits: int | None = 8) -> None:
        super().__init__(eps=eps, steps=steps, alpha=eps / steps, norm=norm, mu=mu, targeted=targeted,
                         findings=findings, seed=seed, quantize_bits=quantize_bits)
