"""FGSM, PGD and MI-FGSM as configurations of the engine."""

from __future__ import annotations

from collections.abc import Sequence

from medrobust.attacks.engine import IterativeAttack
from medrobust.attacks.registry import register_attack


@register_attack("fgsm")
class FGSM(IterativeAttack):
    """Fast Gradient Sign Method: one signed-gradient step of size ``eps``.

    Paper: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples",
    ICLR 2015. L-infinity by default::

        x_adv = Clip_[0,1](x + eps * sign(grad_x J(f(x), y)))        (untargeted)
        x_adv = Clip_[0,1](x - eps * sign(grad_x J(f(x), t)))        (targeted, towards t = y)

    with ``norm="l2"`` the step is ``eps * grad / ||grad||_2``. ``J`` is the model's own loss
    (cross-entropy for softmax, binary cross-entropy for binary/multilabel outputs).

    Args:
        eps: the budget in [0, 1] image units, also the step size. Default 8/255 (8 grey levels
            of the stored image; the common L-inf benchmark budget, as in torchattacks and
            RobustBench); >= 0.
        norm: ``"linf"`` or ``"l2"``. Default ``"linf"``.
        targeted: step towards ``y`` (then the targets). Default False.
        findings: for a multilabel model, the names of the findings to flip. Default None (all).
        seed: kept for the common interface; FGSM draws no random numbers. Default 0.
        quantize_bits: storage bit depth the result is rounded to inside the ball (medrobust: the
            result is what an 8-bit PNG or PACS stores). Default 8; None keeps floats.

    Shape:
        - model: a differentiable classifier (a :class:`~medrobust.models.classifier.Classifier`
          or any ``nn.Module`` returning logits).
        - x: (B, C, H, W) float in [0, 1].
        - y: (B,) int64 true labels (the targets when ``targeted``; (B, K) 0/1 findings for a
          multilabel model).
        - Output: ``x_adv``, (B, C, H, W), ``x``'s dtype, in [0, 1] and within ``eps`` of ``x``.

    Example:

    >>> import torch
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32)
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> y = torch.tensor([0, 2])
    >>> x_adv = FGSM(eps=8 / 255)(model, x, y)
    >>> x_adv.shape, x_adv.dtype
    (torch.Size([2, 1, 32, 32]), torch.float32)
    >>> bool((x_adv - x).abs().max() <= 8 / 255 + 1e-6), bool(x_adv.min() >= 0), bool(x_adv.max() <= 1)
    (True, True, True)
    >>> torch.equal(x_adv, (x_adv * 255).round() / 255)  # on the 8-bit grid
    True
    """

    def __init__(self, eps: float = 8 / 255, norm: str = "linf", targeted: bool = False,
                 findings: Sequence[str] | None = None, seed: int = 0, quantize_bits: int | None = 8) -> None:
        super().__init__(eps=eps, steps=1, alpha=eps, norm=norm, targeted=targeted, findings=findings,
                         seed=seed, quantize_bits=quantize_bits)


@register_attack("pgd")
class PGD(IterativeAttack):
    """Projected Gradient Descent: iterated FGSM from a random start, projected onto the ball.

    Paper: Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
    Adversarial Attacks", ICLR 2018. L-infinity by default::

        x_0     = Clip_[0,1](x + U(-eps, eps))                                (random start)
        x_{t+1} = Clip_{[0,1] and eps-ball around x}(x_t + alpha * sign(grad_x J(f(x_t), y)))

    for t = 0..steps-1 (targeted: descend ``J`` towards ``y``; ``norm="l2"``: normalised
    gradient steps and a uniform start in the L2 ball).

    Args:
        eps: the budget in [0, 1] image units. Default 8/255 (the common L-inf benchmark
            budget); >= 0.
        steps: iterations, at least 1. Default 10.
        alpha: step size. Default None: ``eps / 4`` (2/255 at 8/255, torchattacks' default).
        norm: ``"linf"`` or ``"l2"``. Default ``"linf"``.
        random_start: start from a uniform point of the ball. Default True (the paper's).
        targeted: descend towards ``y`` (then the targets). Default False.
        findings: for a multilabel model, the names of the findings to flip. Default None (all).
        seed: seed of the random start's ``torch.Generator`` when the call is given none, so the
            same seed gives the same result. Default 0.
        quantize_bits: storage bit depth the result is rounded to inside the ball. Default 8;
            None keeps floats.

    Shape:
        - model: a differentiable classifier (a :class:`~medrobust.models.classifier.Classifier`
          or any ``nn.Module`` returning logits).
        - x: (B, C, H, W) float in [0, 1].
        - y: (B,) int64 true labels (the targets when ``targeted``; (B, K) 0/1 findings for a
          multilabel model).
        - Output: ``x_adv``, (B, C, H, W), ``x``'s dtype, in [0, 1] and within ``eps`` of ``x``.

    Example:

    >>> import torch
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32)
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> y = torch.tensor([0, 2])
    >>> x_adv = PGD(eps=8 / 255, steps=5)(model, x, y)
    >>> x_adv.shape, bool((x_adv - x).abs().max() <= 8 / 255 + 1e-6)
    (torch.Size([2, 1, 32, 32]), True)
    >>> torch.equal(x_adv, PGD(eps=8 / 255, steps=5)(model, x, y))  # same seed, same result
    True
    """

    def __init__(self, eps: float = 8 / 255, steps: int = 10, alpha: float | None = None, norm: str = "linf",
                 random_start: bool = True, targeted: bool = False, findings: Sequence[str] | None = None,
                 seed: int = 0, quantize_bits: int | None = 8) -> None:
        super().__init__(eps=eps, steps=steps, alpha=alpha if alpha is not None else eps / 4, norm=norm,
                         random_start=random_start, targeted=targeted, findings=findings, seed=seed,
                         quantize_bits=quantize_bits)


@register_attack("mifgsm")
class MIFGSM(IterativeAttack):
    """Momentum Iterative FGSM: iterated FGSM whose direction accumulates normalised gradients.

    Paper: Dong, Liao, Pang, Su, Zhu, Hu & Li, "Boosting Adversarial Attacks with Momentum",
    CVPR 2018. With ``T = steps``::

        alpha = eps / T,  g_0 = 0,  x_0 = x
        g_{t+1} = mu * g_t + grad_x J(f(x_t), y) / ||grad_x J(f(x_t), y)||_1
        x_{t+1} = Clip_{[0,1] and eps-ball around x}(x_t + alpha * sign(g_{t+1}))

    Args:
        eps: the budget in [0, 1] image units. Default 8/255 (the common L-inf benchmark budget;
            the paper used 16/255 on ImageNet); >= 0.
        steps: iterations T, at least 1; the step size is ``eps / T``. Default 10 (the paper's).
        mu: momentum decay. Default 1.0 (the paper's).
        norm: ``"linf"`` or ``"l2"``. Default ``"linf"``.
        targeted: descend towards ``y`` (then the targets). Default False.
        findings: for a multilabel model, the names of the findings to flip. Default None (all).
        seed: kept for the common interface; MI-FGSM draws no random numbers. Default 0.
        quantize_bits: storage bit depth the result is rounded to inside the ball. Default 8;
            None keeps floats.

    Shape:
        - model: a differentiable classifier (a :class:`~medrobust.models.classifier.Classifier`
          or any ``nn.Module`` returning logits).
        - x: (B, C, H, W) float in [0, 1].
        - y: (B,) int64 true labels (the targets when ``targeted``; (B, K) 0/1 findings for a
          multilabel model).
        - Output: ``x_adv``, (B, C, H, W), ``x``'s dtype, in [0, 1] and within ``eps`` of ``x``.

    Example:

    >>> import torch
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32)
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> y = torch.tensor([0, 2])
    >>> x_adv = MIFGSM(eps=8 / 255)(model, x, y)
    >>> x_adv.shape, bool((x_adv - x).abs().max() <= 8 / 255 + 1e-6)
    (torch.Size([2, 1, 32, 32]), True)
    """

    def __init__(self, eps: float = 8 / 255, steps: int = 10, mu: float = 1.0, norm: str = "linf",
                 targeted: bool = False, findings: Sequence[str] | None = None, seed: int = 0,
                 quantize_bits: int | None = 8) -> None:
        super().__init__(eps=eps, steps=steps, alpha=eps / steps, norm=norm, mu=mu, targeted=targeted,
                         findings=findings, seed=seed, quantize_bits=quantize_bits)
