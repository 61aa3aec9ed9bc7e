"""The Structure Invariant Attack (SIA) as a configuration of the engine.

Wang, Zhang & Zhang, "Structure Invariant Transformation for better Adversarial
Transferability", ICCV 2023: MI-FGSM whose gradient is averaged over ``N`` Structure
Invariant Transformation copies of the current image (:mod:`medrobust.attacks.sit`)::

    alpha = eps / T,  g_0 = 0,  x_0 = x
    gbar  = (1/N) sum_{n=1..N} grad_{x_t} J(f(SIT_n(x_t)), y)
    g_{t+1} = mu * g_t + gbar / ||gbar||_1
    x_{t+1} = Clip_{[0,1] and eps-ball around x}(x_t + alpha * sign(g_{t+1}))

The adversarial image is ``x_T``: a bounded additive perturbation of ``x``; the block
transforms only shape the gradient. Official defaults: eps = 16/255, T = 10 (alpha = 1.6/255),
mu = 1.0, s = 3 blocks per side, N = 20 copies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch

from medrobust.attacks.engine import IterativeAttack
from medrobust.attacks.registry import register_attack
from medrobust.attacks.sit import SIT_VOLUME_REFUSAL, SITPlan, apply_structure_invariant_plan, resolve_ops

log = logging.getLogger(__name__)


@register_attack("sia")
class SIA(IterativeAttack):
    """Structure Invariant Attack: MI-FGSM with the gradient averaged over ``n_copies`` SIT copies.

    Paper: Wang, Zhang & Zhang, "Structure Invariant Transformation for better Adversarial
    Transferability", ICCV 2023; the attack of the study ("Assessing CNN Robustness in Medical
    Imaging Systems", 2025). With ``T = steps``, ``N = n_copies``, ``s = blocks``::

        alpha = eps / T,  g_0 = 0,  x_0 = x
        gbar    = (1/N) sum_{n=1..N} grad_{x_t} J(f(SIT_n(x_t)), y)
        g_{t+1} = mu * g_t + gbar / ||gbar||_1
        x_{t+1} = Clip_{[0,1] and eps-ball around x}(x_t + alpha * sign(g_{t+1}))

    where ``SIT_n`` cuts the image into an s x s grid at random cut points and applies an
    independently drawn transform to each block (:mod:`medrobust.attacks.sit`). The result is a
    bounded additive perturbation; the block transforms only shape the gradient.

    Volumes (B, C, D, H, W) are refused, with :data:`~medrobust.attacks.sit.SIT_VOLUME_REFUSAL`
    as the reason: the paper's block transforms are 2-D, and a depth-wise generalisation would be
    a different attack with no evidence of transferability (PGD, MI-FGSM, APGD and Square take
    volumes).

    Each copy of each image draws its own cut points and operations (the reference code draws
    them once per batch). The copies' randomness is drawn for all ``n_copies`` before any is
    built, so micro-batching (``copies_per_batch``) changes only the floating-point summation
    order of the gradient, not the copies. By name:
    ``build_attack("sia:eps=8/255,n_copies=20,ops=transferattack")``.

    Speed: the engine's default path (:mod:`medrobust.attacks.gradient_pass`) runs the model, on
    the CPU, with channels-last activations, in passes of about 2^19 network pixels and at least
    16 images (128 copies at 64 px, 16 at 224 px; the copies' gradients are gathered, then sent
    back through the transform once) and with its batch norms folded into its convolutions for the
    attack's duration (the user's modules are put back afterwards). Same algorithm, same random
    plan: only the order of floating-point operations changes, so a pixel whose gradient is near
    zero may take the other sign. The speed-ups over the reference code's loops and the attack
    success of both are measured by ``benchmarks/bench_sia.py``; its dated figures are in
    ``benchmarks/README.md``.

    Args:
        eps: the L-inf budget in [0, 1] image units. Default 16/255 (the paper's official value,
            which the study used); >= 0.
        steps: iterations T, at least 1; the step size is ``alpha = eps / T`` (1.6/255 at the
            defaults). Default 10 (the paper's).
        mu: momentum decay. Default 1.0 (the paper's).
        blocks: s, the copies' grid of s x s blocks; at least 1. Default 3 (the paper's).
        n_copies: N, SIT copies the gradient is averaged over per step; at least 1. Default 20
            (the paper's).
        ops: the SIT operations, a preset (``"paper"``: the authors' 10; ``"transferattack"``:
            TransferAttack's 7) or a ``;``-separated list of names (e.g.
            ``"vertical_flip;scale"``) or a sequence of names. Default ``"paper"``.
        copies_per_batch: copies built and run through the model together (bounds memory; on
            the CPU the engine also splits them into passes of bounded size). At least 1.
            Default None: all ``n_copies``.
        targeted: descend towards ``y`` (then the targets). Default False.
        findings: for a multilabel model, the names of the findings to flip. Default None (all).
        seed: seed of the ``torch.Generator`` every random draw comes from when the call is given
            none (medrobust's addition). Default 0.
        quantize_bits: storage bit depth the result is rounded to inside the ball. Default 8;
            None keeps floats.

    Shape:
        - x: (B, C, H, W) float in [0, 1]; ``model`` differentiable.
        - y: (B,) int64 labels (targets when ``targeted``; (B, K) 0/1 findings for a multilabel
          model).
        - Output: ``x_adv``, (B, C, H, W), ``x``'s dtype, in [0, 1], within ``eps`` of ``x``.
          Each step runs the model on ``n_copies * B`` images (in micro-batches of
          ``copies_per_batch * B``, and on the CPU in passes of bounded size).

    Example:

    >>> import torch
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32)
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> y = torch.tensor([0, 2])
    >>> x_adv = SIA(eps=8 / 255)(model, x, y)
    >>> x_adv.shape, x_adv.dtype, bool((x_adv - x).abs().max() <= 8 / 255 + 1e-6)
    (torch.Size([2, 1, 32, 32]), torch.float32, True)
    >>> sia = SIA()  # the paper's defaults
    >>> round(sia.eps * 255), sia.steps, sia.mu, sia.blocks, sia.n_copies
    (16, 10, 1.0, 3, 20)
    """

    volumes = SIT_VOLUME_REFUSAL

    # A plain attribute here shadows the engine's read-only ``n_copies`` property, so the
    # constructor can set it and run records (``describe``) show it.
    n_copies: int = 20  # type: ignore[assignment]

    def __init__(
        self,
        eps: float = 16 / 255,
        steps: int = 10,
        mu: float = 1.0,
        blocks: int = 3,
        n_copies: int = 20,
        ops: str | Sequence[str] = "paper",
        copies_per_batch: int | None = None,
        targeted: bool = False,
        findings: list[str] | None = None,
        seed: int = 0,
        quantize_bits: int | None = 8,
    ) -> None:
        super().__init__(eps=eps, steps=steps, alpha=eps / steps, norm="linf", mu=mu, random_start=False,
                         targeted=targeted, findings=findings, seed=seed, quantize_bits=quantize_bits)
        if blocks < 1:
            raise ValueError(f"sia: blocks must be at least 1, got {blocks}")
        if n_copies < 1:
            raise ValueError(f"sia: n_copies must be at least 1, got {n_copies}")
        if copies_per_batch is not None and copies_per_batch < 1:
            raise ValueError(f"sia: copies_per_batch must be at least 1 (or None for all), got {copies_per_batch}")
        self.blocks = int(blocks)
        self.n_copies = int(n_copies)
        self.op_names = list(resolve_ops(ops))
        self.ops = ops if isinstance(ops, str) else ";".join(self.op_names)
        self.copies_per_batch = int(copies_per_batch) if copies_per_batch is not None else None

    def transformed_batches(self, x_adv: torch.Tensor, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, int]]:
        """Yield ``(copies, k)``: micro-batches of the ``n_copies`` SIT copies of ``x_adv``, built
        from one plan drawn per step (copy-major, so the engine's ``y.repeat(k)`` matches)."""
        plan = SITPlan.sample(x_adv.shape, self.n_copies, self.blocks, self.op_names, generator, device=x_adv.device)
        per = self.copies_per_batch or self.n_copies
        for start in range(0, self.n_copies, per):
            stop = min(start + per, self.n_copies)
            yield apply_structure_invariant_plan(x_adv, plan.copies(start, stop)), stop - start
