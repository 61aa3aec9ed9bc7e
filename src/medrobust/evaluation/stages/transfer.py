"""The transfer stage: the transfer matrix of the first white-box attack — its images crafted on
the model and on each surrogate, each scored on every model. It crafts nothing new: the attack
stage stored every source's images; the surrogates' decisions are resumable stages here."""

from __future__ import annotations

import numpy as np

from medrobust.evaluation.attack_runs import predict_stage
from medrobust.evaluation.attack_success import attack_success
from medrobust.evaluation.context import RunContext
from medrobust.evaluation.results import TransferMatrix
from medrobust.evaluation.stages.attacks import Attacks
from medrobust.execution.units import ModelRef


def run(ctx: RunContext, attacks: Attacks) -> TransferMatrix | None:
    """The transfer matrix of the first white-box attack: its images crafted on each source (the
    model and each surrogate), scored on every model. The surrogates' decisions are resumable
    stages under ``stages/transfer``.

    Args:
        ctx: the run's context.
        attacks: the attack stage's outcome (its white-box and transferred runs).

    Returns:
        The matrix, or None without a surrogate or a white-box attack.
    """
    if not ctx.surrogates or not attacks.white:
        return None
    first = attacks.white[0]
    runs = {"model": first, **{r.source: r for r in attacks.transferred if r.name == first.name and r.eps == first.eps}}
    targets = ["model", *ctx.surrogates]
    clean = {"model": ctx.clean_pred}
    adv = {(s, "model"): run.pred for s, run in runs.items()}
    folder = ctx.stages / "transfer" / first.stage_key.folder
    for t in ctx.surrogates:
        clean[t] = predict_stage(ctx.engine, folder / t / "clean", ModelRef(t), ctx.inputs, "clean", ctx.batch_size,
                                 ctx.seed, ctx.n).summary["pred"]
        for s, run in runs.items():
            adv[(s, t)] = predict_stage(ctx.engine, folder / t / s, ModelRef(t), run.stage, "x_adv", ctx.batch_size,
                                        ctx.seed, ctx.n).summary["pred"]
    return transfer_matrix(first.key, list(runs), targets, clean, adv, ctx.labels)


def transfer_matrix(attack_key: str, sources: list[str], targets: list[str], clean_pred: dict[str, np.ndarray],
                    adv_pred: dict[tuple[str, str], np.ndarray], y: np.ndarray) -> TransferMatrix:
    """Success of images crafted on each source (rows) against each model (columns).

    It crafts nothing: it scores images the resumable attack stages already crafted and stored,
    so each source's images are crafted once and scored on every target.
    ``adv_pred[(source, target)]``: the target's decisions on the source's images;
    ``clean_pred[target]``: its decisions on the clean images. Each cell is
    :func:`~medrobust.evaluation.attack_success.attack_success`: over all images, and over the
    images the target classified correctly before the attack (None when it got none right). The
    diagonal is the white-box success.
    """
    rate, rate_ok = [], []
    for s in sources:
        row, row_ok = [], []
        for t in targets:
            success = attack_success(y, clean_pred[t], adv_pred[(s, t)])
            row.append(success.success_rate_all)
            row_ok.append(success.success_rate_correct)
        rate.append(row)
        rate_ok.append(row_ok)
    return TransferMatrix(attack=attack_key, sources=sources, targets=targets, success_rate=rate,
                          success_rate_correct=rate_ok)
