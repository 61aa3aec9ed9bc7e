"""The RobustBench stage (``robustbench: true``, ``medrobust evaluate --robustbench``): the
attack subset's accuracy under AutoAttack at 8/255 L-inf in RobustBench's terms (Croce et al.,
NeurIPS 2021 Datasets and Benchmarks, "RobustBench: a standardized adversarial robustness
benchmark"): float adversarial images, never rounded to 8 bits, so a vendor can place the figure
beside published ones.

It is not a scorecard row: every other figure of a run is measured on the images a PNG would
store (rounded inside the budget), which is the threat a deployed model meets; a float attacker is
at least as strong, so this figure is at most the stored one at the same budget. medrobust's
AutoAttack runs APGD-CE, APGD-T and Square, not FAB-T (see :mod:`medrobust.attacks.autoattack`):
the figure is said to be "AutoAttack without FAB-T".
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from medrobust.evaluation.context import RunContext
from medrobust.evaluation.results import ModelChecks, RobustBenchFigure
from medrobust.evaluation.stage_keys import attack_key
from medrobust.evaluation.stages.attacks import white_box_crafter
from medrobust.execution.resumable_stage import run_stage
from medrobust.execution.units import FloatAttackUnit

log = logging.getLogger(__name__)

EPS = 8 / 255
"""RobustBench's L-inf budget for its CIFAR and ImageNet leaderboards."""
DEFINITION = ("accuracy under AutoAttack (standard version without FAB-T: APGD-CE, APGD-T, Square) at 8/255 L-inf "
              "on float images, not rounded to 8 bits, as RobustBench measures it; not a scorecard row (the "
              "scorecard's images are the stored ones)")


def run(ctx: RunContext, checks: ModelChecks | None = None) -> RobustBenchFigure | None:
    """AutoAttack at 8/255 L-inf on the attack subset's float images (resumable per batch under
    ``stages/robustbench``).

    Args:
        ctx: the run's context (the attack subset, the model, the engine, the seed).
        checks: the model checks: AutoAttack then sees the model as the white-box attacks do
            (gradients averaged over draws for a random forward pass, logits recovered from
            probabilities). Default None: the model as it is.

    Returns:
        The :class:`~medrobust.evaluation.results.RobustBenchFigure`: clean and robust accuracy
        on the attack subset, the images each AutoAttack member broke, the largest perturbation
        and the seconds per image; None for a multi-label model (RobustBench's accuracy is a
        single-label one).
    """
    labels = ctx.labels
    if labels.ndim > 1:
        log.warning("robustbench: not measured: RobustBench's figure is a single-label accuracy and this model is "
                    "multi-label")
        return None
    key = attack_key("autoattack", EPS)
    params = {"eps": EPS, "norm": "linf"}

    def unit(b: int, sl: slice) -> FloatAttackUnit:
        return FloatAttackUnit(seed=ctx.seed, start=sl.start, attack="autoattack", params=dict(params),
                               crafter=white_box_crafter(checks), clean=ctx.inputs.images(b, "clean"), labels=labels[sl])

    with ctx.progress.stage(f"{key} (RobustBench: float images)", ctx.n) as bar:
        stage = run_stage(ctx.engine, ctx.stages / "robustbench" / key.folder, ctx.n, ctx.batch_size, unit,
                          bar.advance, frozenset({"clean_pred", "pred", "linf", "broken_by", "seconds"}))
    s = stage.summary
    clean_right, right = s["clean_pred"] == labels, s["pred"] == labels
    broken = Counter(str(b) for b in s["broken_by"] if b and b != "clean")
    n = len(labels)
    return RobustBenchFigure(n=n, eps=EPS, clean_accuracy=float(clean_right.mean()) if n else 0.0,
                             robust_accuracy=float((right & clean_right).mean()) if n else 0.0,
                             broken_by=dict(sorted(broken.items())), largest_linf=float(np.max(s["linf"], initial=0.0)),
                             seconds_per_image=float(s["seconds"].sum()) / max(n, 1), definition=DEFINITION)
