"""The model-checks stage: before the attacks, whether the model's forward pass is random, whether it
returns probabilities and whether its loss gradient vanishes (AutoAttack's checks, Croce & Hein 2020,
sec. 5); after them, whether a query attack broke images the gradient attacks could not. The wording
is :mod:`medrobust.evaluation.evaluation_checks`'s; the attack stage acts on the first two (EOT
draws, logits recovered from probabilities)."""

from __future__ import annotations

import numpy as np
import torch

from medrobust.evaluation import evaluation_checks as wording
from medrobust.evaluation.context import RunContext
from medrobust.evaluation.results import ModelChecks
from medrobust.evaluation.run_dir import cached_json
from medrobust.evaluation.stages.attacks import Attacks
from medrobust.execution.pixels import from_stored
from medrobust.specs.components import eps_label

CHECKED_IMAGES = 64
"""Clean images of the attack subset the checks run on (the first ones)."""
EOT_SAMPLES = 20
"""Draws a gradient averages over for a model whose forward pass is random (AutoAttack's ``rand`` version)."""


def run(ctx: RunContext) -> ModelChecks:
    """The checks before the attacks (kept as ``stages/model-checks.json``).

    Args:
        ctx: the run's context; the checks use the first :data:`CHECKED_IMAGES` clean images of
            the attack subset, the model and its output kind.

    Returns:
        :class:`~medrobust.evaluation.results.ModelChecks`: whether the forward pass is random
        (then the attacks average :data:`EOT_SAMPLES` gradients), whether the model returns
        probabilities, how many images have a zero loss gradient, and the flags worded for a user.
    """
    return cached_json(ctx.stages / "model-checks.json", ModelChecks, lambda: _checks(ctx))


def _checks(ctx: RunContext) -> ModelChecks:
    from medrobust.models.output_kind import OutputKind

    model = ctx.model
    n = min(CHECKED_IMAGES, ctx.n)
    x = from_stored(ctx.inputs.take(np.arange(n), ctx.batch_size, "clean")).to(ctx.device)
    y = torch.from_numpy(ctx.labels[:n]).to(ctx.device)
    torch.manual_seed(ctx.seed)
    with torch.no_grad():
        first, second = model(x), model(x)
    randomised = not torch.equal(first, second)
    kind = getattr(model, "output_kind", OutputKind.SOFTMAX)
    rows = first.float()
    probabilities = "softmax" if (kind is OutputKind.SOFTMAX and rows.shape[1] > 1 and bool((rows >= 0).all())
                                  and bool((rows <= 1).all()) and bool(((rows.sum(1) - 1).abs() < 1e-3).all())) else None
    zero = None
    if getattr(model, "differentiable", True):
        from medrobust.execution.units import ModelRef, Workbench

        view = Workbench({"model": model}, ctx.device).model(ModelRef(from_probabilities=probabilities))
        x_var = x.clone().requires_grad_(True)
        loss = model.loss(view(x_var), y, reduction="none") if hasattr(model, "loss") else \
            torch.nn.functional.cross_entropy(view(x_var), y, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), x_var)
        zero = int((grad.flatten(1) == 0).all(dim=1).sum())
    flags = []
    if randomised:
        flags.append(wording.randomised(EOT_SAMPLES))
    if probabilities:
        flags.append(wording.probabilities(dlr=any(a.name in ("apgd", "autoattack") for a in ctx.config.attacks)))
    if zero is not None and zero > wording.ZERO_GRADIENT_SHARE * n:
        flags.append(wording.zero_gradients(zero, n))
    return ModelChecks(n_images=n, randomised=randomised, eot_samples=EOT_SAMPLES if randomised else 1,
                       probabilities=probabilities, zero_gradient_images=zero, flags=flags)


def after_attacks(checks: ModelChecks, ctx: RunContext, attacks: Attacks) -> ModelChecks:
    """``checks`` with, per budget, the images a query attack broke that every gradient attack at
    that budget left right (Square alone, or as the last member of autoattack), and its flag.

    Args:
        checks: the checks made before the attacks.
        ctx: the run's context (its labels; the flag is raised only for a differentiable model).
        attacks: the attack stage's outcome (white-box rows and the budget sweep).

    Returns:
        ``checks`` updated with ``query_beats_gradients`` (budget label -> images) and its flags;
        ``checks`` itself when no budget has such an image.
    """
    from medrobust.attacks.registry import build_attack

    y = ctx.labels
    by_budget: dict[float, dict[str, np.ndarray]] = {}
    for run in [*attacks.white, *attacks.sweep]:
        slot = by_budget.setdefault(round(run.eps, 9), {"gradient": np.zeros(len(y), bool), "query": np.zeros(len(y), bool)})
        wrong = run.pred != y
        members = run.stage.summary.get("broken_by")
        if members is not None:  # an ensemble: who broke what
            slot["query"] |= members == "square"
            slot["gradient"] |= wrong & (members != "square")
        elif getattr(build_attack(run.name), "needs_gradients", True):
            slot["gradient"] |= wrong
        else:
            slot["query"] |= wrong
    beaten = {eps_label(eps): int((s["query"] & ~s["gradient"]).sum()) for eps, s in sorted(by_budget.items())}
    beaten = {k: v for k, v in beaten.items() if v}
    if not beaten or not ctx.differentiable:
        return checks
    flags = [*checks.flags, *(wording.query_beats_gradients(count, eps, "the query attack (Square)")
                              for eps, count in beaten.items())]
    return checks.model_copy(update={"query_beats_gradients": beaten, "flags": flags})
