"""Auto-PGD (APGD-CE and APGD-T): Croce & Hein, ICML 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks" (the first two attacks of AutoAttack).

A PGD whose step size needs no tuning: it starts at ``eta = 2 eps``, moves with momentum, and halves
an image's step size at checkpoints where its loss has stopped improving, restarting that image from
its best point. Per image, with ``P`` the projection onto the eps-ball and [0, 1]::

    z_{k+1} = P(x_k + eta sign(grad L(x_k)))                          (L2: eta grad / ||grad||_2)
    x_{k+1} = P(x_k + a (z_{k+1} - x_k) + (1 - a)(x_k - x_{k-1}))      a = 0.75 (1 at the first step)

Checkpoints ``w_0 = 0, w_1 = ceil(0.22 N)`` and ``w_{j+1} = w_j + max(w_j - w_{j-1} - 0.03 N, 0.06 N)``
(``N`` the steps). At ``w_j`` the step size halves, and the image goes back to its best point, when
(1) the loss rose in fewer than ``rho = 0.75`` of the steps since ``w_{j-1}``, or (2) the step size
was not halved at ``w_{j-1}`` and the best loss has not improved since. ``restarts`` runs start from
random points of the ball (``x + eps t / ||t||_inf``, t uniform; L2: t normal), each on the images
no earlier run has broken.

Losses: ``ce`` (the model's own loss: cross-entropy, binary cross-entropy for a binary or
multi-label model) and ``dlr``, the difference of logits ratio, invariant to shifting and scaling
the logits (so a softmax or a saturated model cannot hide behind them)::

    DLR(z, y)   = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)                  untargeted
    DLR_T(z, y) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)                 targeted at t

with ``z_pi1 >= z_pi2 >= ...`` the sorted logits. ``targeted=True`` is APGD-T: for each of the
``n_target_classes`` (default 9, or K - 1 when fewer) classes the model ranks highest after the
true one, a run with the targeted DLR loss at that class, each on the images still unbroken.

Deviations, for models with few classes (the paper's had at least 10): DLR_T's denominator needs
four classes; with three it is ``z_pi1 - z_pi3``, the whole logit range. DLR needs three classes;
with two (or a binary model's single logit, read as [0, z]) both losses fall back to
cross-entropy, the only information a two-class margin has. A multi-label model takes ``ce`` only.

medrobust, beyond the paper: an image counts as broken only when the image a PNG would store (the
iterate rounded to the ``quantize_bits`` grid inside the ball) is misclassified, since that is
what an attacker can deliver; an unbroken image ends at its best-loss point, rounded so too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from medrobust.attacks.budget import quantize_within
from medrobust.attacks.decisions import gets_wrong
from medrobust.attacks.engine import IterativeAttack
from medrobust.attacks.gradient_pass import input_gradient
from medrobust.attacks.registry import register_attack
from medrobust.models.output_kind import OutputKind

APGD_LOSSES = ("ce", "dlr")
MOMENTUM = 0.75
"""The paper's ``alpha``: the weight of the new point against the previous step."""


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD checks its progress (the paper's ``w_j``), as AutoAttack
    computes them: ``w_1 = max(int(0.22 N), 1)``, then steps of
    ``max(w_j - w_{j-1} - max(int(0.03 N), 1), max(int(0.06 N), 1))``, below ``N``.

    >>> checkpoints(100)
    [22, 41, 57, 70, 80, 87, 93, 99]
    """
    first, least, shrink = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, length, at = [], first, first
    while at < steps:
        out.append(at)
        length = max(length - shrink, least)
        at += length
    return out


def halve_step(rises: torch.Tensor, span: int, rho: float, halved_before: torch.Tensor,
               best_before: torch.Tensor, best_now: torch.Tensor) -> torch.Tensor:
    """Per image, whether APGD halves its step size at a checkpoint (the paper's two conditions):
    the loss rose in at most ``rho`` of the ``span`` steps since the last checkpoint (``rises``
    of them), or the step was not halved at the last checkpoint and the best loss has not improved
    since (``best_before >= best_now``).

    >>> import torch
    >>> halve_step(torch.tensor([16., 17.]), 22, 0.75, torch.tensor([True, True]), torch.zeros(2), torch.ones(2))
    tensor([ True, False])
    >>> halve_step(torch.tensor([20., 20.]), 22, 0.75, torch.tensor([False, True]), torch.ones(2), torch.ones(2))
    tensor([ True, False])
    """
    return (rises <= span * rho) | (~halved_before & (best_before >= best_now))


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per image, the (targeted) difference of logits ratio of the module docstring.

    Args:
        logits: (B, K) logits, K >= 3.
        y: (B,) true classes.
        target: (B,) target classes for DLR_T, or None for the untargeted loss.

    Returns:
        (B,) the loss to ascend.
    """
    ordered = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None])[:, 0]
    if target is None:
        best_other = torch.where(logits.argmax(1) == y, ordered[:, 1], ordered[:, 0])
        return -(true - best_other) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
    wanted = logits.gather(1, target[:, None])[:, 0]
    low = (ordered[:, 2] + ordered[:, 3]) / 2 if logits.shape[1] >= 4 else ordered[:, 2]
    return -(true - wanted) / (ordered[:, 0] - low + 1e-12)


@register_attack("apgd")
class APGD(IterativeAttack):
    """Auto-PGD (Croce & Hein, ICML 2020): APGD-CE, APGD-DLR and APGD-T (see the module docstring).

    Args:
        eps: budget in ``norm``, in [0, 1] image units. Default 8/255.
        steps: iterations per run (the paper's ``N_iter``). Default 100.
        norm: ``"linf"`` or ``"l2"``. Default ``"linf"``.
        loss: ``"ce"`` or ``"dlr"``. Default ``"ce"``; ``targeted`` uses DLR_T whatever it says.
        targeted: APGD-T: target the classes the model ranks highest after the true one. ``y``
            holds the true labels either way. Default False.
        restarts: random starts per image (per target for APGD-T). Default 1.
        n_target_classes: targets of APGD-T (capped at K - 1). Default 9.
        rho: the fraction of steps the loss must rise in between checkpoints. Default 0.75.
        findings: a multi-label model's findings to flip (``ce`` only).
        seed: seed of the random starts. Default 0.
        quantize_bits: the storage grid images are judged and returned on (None: floats). Default 8.

    Shape:
        - x: (B, C, H, W) float in [0, 1]; y: (B,) true labels ((B, K) 0/1 for multi-label).
        - Output: (B, C, H, W), in [0, 1], within ``eps`` of ``x``, on the ``quantize_bits`` grid.

    Example:

    >>> import torch
    >>> from medrobust.models import build_classifier
    >>> model = build_classifier("small-cnn", ["Normal", "Pneumonia", "Pneumothorax"], 32)
    >>> x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> x_adv = APGD(eps=4 / 255, steps=5)(model, x, torch.tensor([0, 2]))
    >>> x_adv.shape, bool((x_adv - x).abs().max() <= 4 / 255 + 1e-6)
    (torch.Size([2, 1, 32, 32]), True)
    """

    name = "apgd"

    def __init__(self, eps: float = 8 / 255, steps: int = 100, norm: str = "linf", loss: str = "ce",
                 targeted: bool = False, restarts: int = 1, n_target_classes: int = 9, rho: float = 0.75,
                 findings: Sequence[str] | None = None, seed: int = 0, quantize_bits: int | None = 8) -> None:
        super().__init__(eps=eps, steps=steps, alpha=2 * eps, norm=norm, random_start=True, targeted=targeted,
                         findings=findings, seed=seed, quantize_bits=quantize_bits)
        if loss not in APGD_LOSSES:
            raise ValueError(f"APGD loss must be one of {', '.join(APGD_LOSSES)}, got {loss!r}")
        if int(restarts) < 1 or int(n_target_classes) < 1:
            raise ValueError(f"APGD needs restarts >= 1 and n_target_classes >= 1, got {restarts} and {n_target_classes}")
        if not 0 < float(rho) <= 1:
            raise ValueError(f"APGD rho must be in (0, 1], got {rho}")
        self.loss_name = "dlr" if targeted else loss
        self.restarts = int(restarts)
        self.n_target_classes = int(n_target_classes)
        self.rho = float(rho)

    # --- the pieces ------------------------------------------------------------------------
    @staticmethod
    def _columns(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs as K columns for the losses (a binary model's one logit z as [0, z])."""
        if getattr(model, "output_kind", OutputKind.SOFTMAX) is OutputKind.BINARY:
            return torch.cat([torch.zeros_like(logits), logits], dim=1)
        return logits

    def _per_image_loss(self, model: nn.Module, raw: torch.Tensor, y: torch.Tensor,
                        target: torch.Tensor | None) -> torch.Tensor:
        kind = getattr(model, "output_kind", OutputKind.SOFTMAX)
        if kind is OutputKind.MULTILABEL:
            return super().loss(model, raw, y) if target is None else -super().loss(model, raw, target)
        logits = self._columns(model, raw)
        if self.loss_name == "dlr" and logits.shape[1] >= 3:
            return dlr_loss(logits, y, target)
        if target is not None:  # two classes: towards the target is away from the truth
            return -nn.functional.cross_entropy(logits, target, reduction="none")
        return nn.functional.cross_entropy(logits, y, reduction="none")

    def _evaluate(self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor,
                  target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-image loss, logits, input gradient) at ``x_adv``, averaged over a randomised
        model's EOT draws (``model.eot_samples``)."""
        x_var = x_adv.detach().requires_grad_(True)
        draws = max(1, int(getattr(model, "eot_samples", 1)))
        grad = torch.zeros_like(x_adv)
        losses, logits_sum = [], None
        for _ in range(draws):
            seen: dict[str, list] = {"loss": [], "logits": []}

            def loss_of(images: torch.Tensor, rows: slice, seen: dict = seen) -> torch.Tensor:
                logits = model(images)
                per = self._per_image_loss(model, logits, y[rows], None if target is None else target[rows])
                seen["loss"].append(per.detach())
                seen["logits"].append(logits.detach())
                return per.sum()

            grad += input_gradient(loss_of, x_var, x_var, self.execution.pass_size(model, x_var))
            losses.append(torch.cat(seen["loss"]))
            draw_logits = torch.cat(seen["logits"])
            logits_sum = draw_logits if logits_sum is None else logits_sum + draw_logits
        return torch.stack(losses).mean(0), logits_sum / draws, grad / draws

    def _stored(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """What a file would hold of ``x_adv``: rounded to the grid inside the ball."""
        if self.quantize_bits is None or self.eps * (2**self.quantize_bits - 1) < 1.0 - 1e-6:
            return x_adv
        return quantize_within(x_adv, x, self.budget, self.quantize_bits)

    # --- one run ---------------------------------------------------------------------------
    def run_once(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                 target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One APGD run from a random start: ``(images, broken)`` — per image the stored image
        that the model gets wrong (``broken``), else the stored best-loss point."""
        budget, n = self.budget, len(x)
        shape = (n, *([1] * (x.ndim - 1)))
        t = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1 \
            if self.norm == "linf" else torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        scale = t.flatten(1).abs().amax(1) if self.norm == "linf" else t.flatten(1).norm(dim=1)
        x_adv = (x + self.eps * t / scale.clamp_min(1e-12).view(shape)).clamp(0.0, 1.0)
        loss, logits, grad = self._evaluate(model, x_adv, y, target)
        found, best_adv = self._check(model, logits, x_adv, x, y, torch.zeros(n, dtype=torch.bool, device=x.device),
                                      x_adv.clone())
        x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
        step = torch.full(shape, 2 * self.eps, dtype=x.dtype, device=x.device)
        x_prev = x_adv.clone()
        marks = checkpoints(self.steps)
        rises = torch.zeros(n, device=x.device)
        reduced_before = torch.ones(n, dtype=torch.bool, device=x.device)
        best_at_mark = loss_best.clone()
        last_mark, loss_prev = 0, loss
        for i in range(self.steps):
            a = MOMENTUM if i > 0 else 1.0
            z = budget.project(x_adv + step * _direction(grad, self.norm), x)
            x_new = budget.project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x)
            x_prev, x_adv = x_adv, x_new
            loss, logits, grad = self._evaluate(model, x_adv, y, target)
            found, best_adv = self._check(model, logits, x_adv, x, y, found, best_adv)
            rises += (loss > loss_prev).to(rises.dtype)
            loss_prev = loss
            better = loss > loss_best
            x_best[better], grad_best[better], loss_best[better] = x_adv[better], grad[better], loss[better]
            if i + 1 in marks:
                span = i + 1 - last_mark
                halve = halve_step(rises, span, self.rho, reduced_before, best_at_mark, loss_best)
                step[halve] /= 2
                x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
                reduced_before, best_at_mark, rises, last_mark = halve, loss_best.clone(), rises.zero_(), i + 1
        return torch.where(found.view(shape), best_adv, self._stored(x_best, x)), found

    def _check(self, model: nn.Module, logits: torch.Tensor, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               found: torch.Tensor, best_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Record the images newly broken at ``x_adv`` whose stored version the model gets wrong too."""
        candidates = gets_wrong(model, logits, y) & ~found
        if not bool(candidates.any()):
            return found, best_adv
        idx = candidates.nonzero()[:, 0]
        stored = self._stored(x_adv[idx].detach(), x[idx])
        with torch.no_grad():
            wrong = gets_wrong(model, model(stored), y[idx])
        keep = idx[wrong]
        found = found.clone()
        found[keep] = True
        best_adv = best_adv.clone()
        best_adv[keep] = stored[wrong]
        return found, best_adv

    # --- the attack --------------------------------------------------------------------------
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        kind = getattr(model, "output_kind", OutputKind.SOFTMAX)
        if kind is OutputKind.MULTILABEL and self.loss_name == "dlr":
            raise ValueError("APGD's DLR loss (and APGD-T) needs one class per image; a multi-label model takes "
                             "loss=ce")
        out = self._stored(x.clone(), x)
        with self.execution.running(model, x):
            with torch.no_grad():
                clean_logits = model(x)
            broken = gets_wrong(model, clean_logits, y)  # wrong already: nothing to attack (AutoAttack's rule)
            for target in self._targets(model, clean_logits, y) if self.targeted else [None]:
                for _ in range(self.restarts):
                    todo = (~broken).nonzero()[:, 0]
                    if len(todo) == 0:
                        return out
                    out[todo], found = self.run_once(model, x[todo], y[todo], generator,
                                                     None if target is None else target[todo])
                    broken[todo[found]] = True
        return out

    def _targets(self, model: nn.Module, clean: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """APGD-T's targets: per image the classes ranked 2nd, 3rd, ... by the clean logits (the
        true class excluded), ``min(n_target_classes, K - 1)`` of them."""
        clean_logits = self._columns(model, clean)
        k = clean_logits.shape[1]
        masked = clean_logits.masked_fill(nn.functional.one_hot(y, k).bool(), -math.inf)
        order = masked.argsort(dim=1, descending=True)
        return [order[:, j] for j in range(min(self.n_target_classes, k - 1))]


def _direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit step direction of ``grad``: its sign (L-inf) or ``grad / ||grad||_2`` per image."""
    if norm == "linf":
        return grad.sign()
    return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
