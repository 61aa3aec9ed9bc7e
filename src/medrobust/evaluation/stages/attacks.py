"""The attack stage: every configured attack white-box on the model, transferred from each
surrogate, and its epsilon sweep. Each (attack, budget, source) is a resumable batched stage
(:func:`~medrobust.evaluation.attack_runs.run_attack_stage`) named by its
:func:`~medrobust.evaluation.stage_keys.attack_key`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medrobust.evaluation.attack_runs import AttackRun, attack_eps, run_attack_stage
from medrobust.evaluation.attack_success import attack_success
from medrobust.evaluation.classification import accuracy_drop_pp, classification_report, dangerous_flips
from medrobust.evaluation.config_sections import AttackConfig
from medrobust.evaluation.context import RunContext
from medrobust.evaluation.results import AttackOutcome, ModelChecks, Perturbation, SweepPoint
from medrobust.evaluation.stage_keys import StageKey, attack_key, transfer_sweep_name
from medrobust.execution.units import ModelRef


@dataclass
class Attacks:
    """The attack stage's runs and outcomes. ``white``: each attack on the model at its main
    budget; ``sweep``: the sweeps' other budgets; ``transferred``: crafted on each surrogate at the
    main budget; ``transferred_sweep``: crafted on each surrogate at the sweeps' other budgets
    (a transfer row is measured on the same grid as the white-box one)."""

    white: list[AttackRun] = field(default_factory=list)
    sweep: list[AttackRun] = field(default_factory=list)
    transferred: list[AttackRun] = field(default_factory=list)
    transferred_sweep: list[AttackRun] = field(default_factory=list)
    outcomes: list[AttackOutcome] = field(default_factory=list)
    sweeps: dict[str, list[SweepPoint]] = field(default_factory=dict)
    seconds_per_image: dict[str, float] = field(default_factory=dict)


def run_attack(ctx: RunContext, key: StageKey, name: str, params: dict, title: str,
               crafter: ModelRef = ModelRef("model"), allow_large_eps: bool = False) -> AttackRun:
    """One attack on the attack subset, crafted on ``crafter`` and scored on the model, with its
    own progress stage (``title``)."""
    with ctx.progress.stage(title, ctx.n) as bar:
        return run_attack_stage(ctx.engine, ctx.stages / "attacks", key, name, params, crafter,
                                ModelRef("model"), ctx.inputs, ctx.batch_size, ctx.seed, bar.advance, allow_large_eps,
                                source="white-box" if crafter.name == "model" else crafter.name)


def white_box_crafter(checks: ModelChecks | None) -> ModelRef:
    """The model as the white-box attacks see it: averaged over draws when its forward pass is
    random, with its logits recovered when it returns probabilities (the model checks decide)."""
    if checks is None:
        return ModelRef("model")
    return ModelRef("model", eot_samples=checks.eot_samples if checks.randomised else None,
                    from_probabilities=checks.probabilities)


def run(ctx: RunContext, checks: ModelChecks | None = None) -> Attacks:
    """Every configured attack: white-box, from each surrogate, and its sweep's other budgets
    (white-box, and from each surrogate the attack is transferred from).

    Each (attack, budget, source) is a resumable stage under ``stages/attacks``, named by its
    :func:`~medrobust.evaluation.stage_keys.attack_key`; each has its own progress stage.

    Args:
        ctx: the run's context.
        checks: the model checks (the white-box attacks average over draws of a random model and
            see the logits of one that returns probabilities); None: the model as it is.

    Returns:
        The :class:`Attacks`: the runs (white-box, sweep, transferred and their sweep), their
        outcomes, each sweep's accuracy per budget (a transferred one named by
        :func:`~medrobust.evaluation.stage_keys.transfer_sweep_name`) and the white-box attacks' seconds per image.
    """
    out = Attacks()
    white_box = white_box_crafter(checks)
    for acfg in ctx.config.attacks:
        params = {**acfg.params, "seed": acfg.params.get("seed", ctx.seed)}
        eps = attack_eps(acfg.name, params)
        key = attack_key(acfg.name, eps)
        run_ = None
        if acfg.white_box:
            t0 = time.perf_counter()
            run_ = run_attack(ctx, key, acfg.name, params, f"{key} white-box", white_box,
                              allow_large_eps=acfg.allow_large_eps)
            out.seconds_per_image[f"attack {key}"] = (time.perf_counter() - t0) / ctx.n
            out.white.append(run_)
            out.outcomes.append(attack_outcome(run_, ctx))
        for name in ctx.surrogates if acfg.transfer else []:
            tkey = attack_key(acfg.name, eps, crafted_on=name)
            trun = run_attack(ctx, tkey, acfg.name, params, str(tkey), ModelRef(name),
                              allow_large_eps=acfg.allow_large_eps)
            out.transferred.append(trun)
            out.outcomes.append(attack_outcome(trun, ctx))
            if acfg.eps_sweep:
                out.sweeps[transfer_sweep_name(acfg.name, name)] = sweep_points(
                    _sweep(ctx, acfg, params, eps, trun, ModelRef(name), out.transferred_sweep), ctx.labels)
        if acfg.eps_sweep and run_ is not None:
            out.sweeps[acfg.name] = sweep_points(_sweep(ctx, acfg, params, eps, run_, white_box, out.sweep), ctx.labels)
    return out


def _sweep(ctx: RunContext, acfg: AttackConfig, params: dict, eps: float, main: AttackRun, crafter: ModelRef,
           into: list[AttackRun]) -> list[AttackRun]:
    """``acfg``'s sweep crafted on ``crafter``: ``main`` at its own budget, a run at each other
    (appended to ``into`` too)."""
    runs = []
    for e in acfg.eps_sweep:
        if abs(e - eps) < 1e-9:
            runs.append(main)
            continue
        skey = attack_key(acfg.name, e, crafted_on=None if crafter.name == "model" else crafter.name)
        title = f"{skey} sweep" if crafter.name == "model" else str(skey)
        runs.append(run_attack(ctx, skey, acfg.name, {**params, "eps": e}, title, crafter,
                               allow_large_eps=acfg.allow_large_eps))
        into.append(runs[-1])
    return runs


def attack_outcome(run: AttackRun, ctx: RunContext) -> AttackOutcome:
    """Everything the report says about one attack run."""
    return outcome_of(run, ctx.labels, ctx.clean_pred, ctx.classes, ctx.plan.normal, ctx.plan.emergency)


def outcome_of(run: AttackRun, y: np.ndarray, clean_pred: np.ndarray, classes: list[str], normal: int | None,
               emergency: Sequence[int] = ()) -> AttackOutcome:
    """:func:`attack_outcome` from its parts. ``normal``: the normal class's index (None: dangerous
    flips not assessed); ``emergency``: the emergency findings' indices."""
    clean = classification_report(y, clean_pred, classes)
    adv = classification_report(y, run.pred, classes)
    success = attack_success(y, clean_pred, run.pred)
    summary = run.stage.summary
    psnr_values = summary["psnr"]
    finite = psnr_values[np.isfinite(psnr_values)]
    return AttackOutcome(
        key=run.key, attack=run.name, eps=run.eps,
        params={k: str(v) for k, v in run.params.items()}, source=run.source, clean=clean, adversarial=adv,
        success_rate_all=success.success_rate_all, success_rate_correct=success.success_rate_correct,
        n_correct_before=success.n_correct_before, accuracy_drop_pp=accuracy_drop_pp(clean, adv),
        dangerous_flips=dangerous_flips(y, clean_pred, run.pred, classes, normal, emergency),
        perturbation=Perturbation(
            linf_mean=float(summary["linf"].mean()), linf_max=float(summary["linf"].max()),
            l2_mean=float(summary["l2"].mean()), ssim_mean=float(summary["ssim"].mean()),
            psnr_mean_db=float(finite.mean()) if len(finite) else None,
        ),
        seconds_per_image=run.seconds / max(1, len(y)),
        broken_by=_counts(summary.get("broken_by")),
    )


def _counts(members: np.ndarray | None) -> dict[str, int] | None:
    """How many images each member of an ensemble broke (None: not an ensemble)."""
    if members is None:
        return None
    names, counts = np.unique(members.astype(str), return_counts=True)
    return {str(k): int(v) for k, v in zip(names, counts) if k}


def sweep_points(runs: list[AttackRun], y: np.ndarray) -> list[SweepPoint]:
    return sorted((SweepPoint(eps=r.eps, accuracy=float((r.pred == y).mean())) for r in runs), key=lambda p: p.eps)

