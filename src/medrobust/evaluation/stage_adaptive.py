"""The adaptive stage of one defense: every member of the portfolio, the EOT and step doubling
checks, the worst case per image and the gradient-masking flags (the rules are
:mod:`medrobust.evaluation.adaptive_portfolio`'s). Every run is a resumable attack stage; the
checks' decisions are functions of finished stages, so a restarted run takes the same path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.components import eps_label
from medrobust.evaluation.adaptive_portfolio import (
    GRADIENT_MEMBERS,
    MEMBER_DESCRIPTIONS,
    DoublingCheck,
    accuracy_noise,
    double_until_converged,
    masking_reasons,
    worst_case,
)
from medrobust.evaluation.progress import Progress, SilentProgress
from medrobust.evaluation.results import AdaptiveMember, ConvergenceCheck
from medrobust.evaluation.stage_attacks import AttackRun, run_attack_stage
from medrobust.evaluation.units import ModelRef

RESTART_SEED_STRIDE = 7919
"""Seed offset between random restarts (a prime: restart r starts from seed + r x 7919)."""


@dataclass(frozen=True)
class AdaptiveSettings:
    """What the portfolio runs against each defense (``adaptive`` of the run's configuration)."""

    attack: str
    params: dict[str, Any]
    eps: float
    portfolio: tuple[str, ...]
    restarts: int = 2
    max_steps: int = 80
    eot_samples: int | None = None
    max_eot_samples: int = 80
    square_queries: int = 1000
    masking_eps: float | None = 64 / 255
    differentiable_model: bool = True
    eps_sweep: tuple[float, ...] = ()  # further budgets the portfolio runs at, with the effort ``eps``'s checks reached


@dataclass
class AdaptiveResult:
    """The portfolio's outcome against one defense."""

    accuracy: float  # worst case: right clean and under every member
    robust: np.ndarray  # per image: right clean and under every member
    members: list[AdaptiveMember]
    checks: list[ConvergenceCheck]
    masking_eps_accuracy: float | None
    masking: list[str]
    masking_assessed: bool
    gradient_mode: str
    effort: tuple[int, int] = (1, 1)  # the (steps, EOT draws) the checks reached


def _check(check: DoublingCheck) -> ConvergenceCheck:
    return ConvergenceCheck(quantity=check.quantity, values=list(check.values), accuracies=list(check.accuracies),
                            tolerance=check.tolerance, converged=check.converged, text=check.text())


def run_portfolio(engine, spec: str, settings: AdaptiveSettings, y: np.ndarray, clean_pred: np.ndarray,
                  target: ModelRef, inputs, transfer: dict[str, np.ndarray], stage_root: Path, batch_size: int,
                  seed: int, progress: Progress | None = None, eps: float | None = None,
                  effort: tuple[int, int] | None = None) -> AdaptiveResult:
    """Run the portfolio against defense ``spec`` at budget ``eps`` (default ``settings.eps``).
    ``clean_pred``: the defended model's decisions on the clean images; ``target``: the defended
    model as evaluated (its decisions count); ``transfer``: {key: the defended model's decisions
    on images crafted on the undefended model at that budget}; ``inputs``: the clean attack subset.
    ``effort``: (steps, EOT draws) reached by the checks at the main budget: given, the gradient
    members run with it (one start each) and neither the doubling checks nor the masking check run
    again (a sweep budget)."""
    budget = settings.eps if eps is None else eps
    progress = progress or SilentProgress()
    from medrobust.attacks.registry import attack_parameters, build_attack
    from medrobust.defenses.defended import DEFAULT_EOT_SAMPLES, defense_routes, gradient_route
    from medrobust.defenses.registry import build_defense

    defense = build_defense(spec)
    n = len(y)
    base = {k: v for k, v in settings.params.items() if k != "eps"}
    signature = attack_parameters(settings.attack)
    has_steps = "steps" in signature
    first_steps = int(base.pop("steps", signature["steps"][1] if has_steps else 1))
    uses_gradients = bool(getattr(build_attack(settings.attack), "needs_gradients", True))
    eot_start = int(settings.eot_samples or (DEFAULT_EOT_SAMPLES if defense.randomized else 1))

    def right(run: AttackRun) -> np.ndarray:
        return run.pred == y

    def gradient_run(member: str, steps: int, draws: int, restart: int = 0, eps: float | None = None) -> AttackRun:
        eps = budget if eps is None else eps
        run_seed = seed + restart * RESTART_SEED_STRIDE
        params = {**base, "eps": eps, "seed": run_seed}
        if has_steps:
            params["steps"] = steps
        if "alpha" in base and eps != settings.eps:  # a step size set for the budget scales with it
            params["alpha"] = float(base["alpha"]) * eps / settings.eps
        key = (f"{settings.attack}@{eps_label(eps)} adaptive {member}" + (f" {steps} steps" if has_steps else "")
               + (f" eot {draws}" if defense.randomized else "") + (f" restart {restart}" if restart else "")
               + f" vs {spec}")
        crafter = ModelRef("model", defense=spec, eot_samples=draws, gradient=member)
        with progress.stage(f"defense {spec}: {key.removesuffix(f' vs {spec}')}", n) as bar:
            return run_attack_stage(engine, stage_root, key, settings.attack, params, crafter, target, inputs,
                                    batch_size, run_seed, bar.advance, allow_large_eps=True, source=f"adaptive vs {spec}")

    gradient_members = [m for m in settings.portfolio if m in GRADIENT_MEMBERS]
    skipped: dict[str, str] = {}
    if gradient_members and not settings.differentiable_model:
        skipped.update({m: "not run: the model gives no gradients (a black box)" for m in gradient_members})
    elif gradient_members and not uses_gradients:
        skipped.update({m: f"not run: the adaptive attack {settings.attack} uses no gradients" for m in gradient_members})
    if "smooth" in gradient_members and all(route != "smooth" for _, route, _ in defense_routes(defense, "smooth")):
        skipped.setdefault("smooth", f"not run: no member of {spec} without gradients has a smooth approximation "
                                     "(the same attack as unrolled)")
    if "bpda" in gradient_members and all(route != "exact" for _, route, _ in defense_routes(defense, "unrolled")):
        skipped.setdefault("bpda", f"not run: no member of {spec} has exact gradients (the same attack as unrolled)")
    active = [m for m in gradient_members if m not in skipped]

    checks: list[ConvergenceCheck] = []
    member_runs: dict[str, list[AttackRun]] = {}
    steps, draws = effort if effort is not None else (first_steps, eot_start)
    high_eps_accuracy = None
    if active and effort is not None:
        member_runs = {member: [gradient_run(member, steps, draws)] for member in active}
    elif active:
        primary = active[0]
        primary_runs: dict[str, AttackRun] = {}  # by key: the EOT and step checks share a run

        def primary_run(steps: int, draws: int, restart: int = 0) -> AttackRun:
            run = gradient_run(primary, steps, draws, restart)
            primary_runs[run.key] = run
            return run

        if defense.randomized:
            check = double_until_converged("EOT draws", draws, settings.max_eot_samples,
                                           lambda d: float(right(primary_run(steps, d)).mean()),
                                           lambda acc: accuracy_noise(acc, n))
            checks.append(_check(check))
            draws = check.values[-1]
        if has_steps:
            check = double_until_converged("steps", steps, settings.max_steps,
                                           lambda t: float(right(primary_run(t, draws)).mean()),
                                           lambda acc: 1.0 / max(1, n))
            checks.append(_check(check))
            steps = check.values[-1]
        for restart in range(1, settings.restarts):
            primary_run(steps, draws, restart)
        member_runs[primary] = list(primary_runs.values())
        for member in active[1:]:
            member_runs[member] = [gradient_run(member, steps, draws)]
        if settings.masking_eps is not None and settings.masking_eps > budget:
            high = gradient_run(primary, steps, draws, eps=settings.masking_eps)  # at the converged effort
            high_eps_accuracy = float(right(high).mean())

    rights: dict[str, list[np.ndarray]] = {}
    details: dict[str, tuple[str, list[str], float]] = {}
    for name in settings.portfolio:
        if name in skipped:
            continue
        if name in GRADIENT_MEMBERS:
            chosen = member_runs[name]
            step_text = f", {steps} steps" if has_steps else ""
            step_text += (f" (doubled from {first_steps})" if name == active[0] and has_steps and steps != first_steps
                          and effort is None else "")
            eot_text = f", EOT over {draws} draws" if defense.randomized else ""
            restart_text = (f", {settings.restarts} random starts" if name == active[0] and settings.restarts > 1
                            and effort is None else "")
            description = (f"{settings.attack}@{eps_label(budget)}{step_text}{eot_text}{restart_text}; "
                           f"{gradient_route(defense, name)}")
            rights[name] = [right(r) for r in chosen]
            details[name] = (description, [r.key for r in chosen], sum(r.seconds for r in chosen))
        elif name == "square":
            key = f"square@{eps_label(budget)} {settings.square_queries} queries adaptive vs {spec}"
            with progress.stage(f"defense {spec}: {key.removesuffix(f' vs {spec}')}", n) as bar:
                run = run_attack_stage(engine, stage_root, key, "square",
                                       {"eps": budget, "queries": settings.square_queries, "seed": seed}, target,
                                       target, inputs, batch_size, seed, bar.advance, allow_large_eps=True,
                                       source=f"adaptive vs {spec}")
            rights[name] = [right(run)]
            details[name] = (f"square@{eps_label(budget)}, {settings.square_queries} queries to the defended model",
                             [run.key], run.seconds)
        elif transfer:
            rights[name] = [pred == y for pred in transfer.values()]
            details[name] = (transfer_description(list(transfer)), list(transfer), 0.0)
        else:
            skipped[name] = f"not run: no attack was crafted on the undefended model at {eps_label(budget)}"
    robust, member_accuracy = worst_case(clean_pred == y, rights)
    members = []
    for name in settings.portfolio:
        if name in skipped:
            members.append(AdaptiveMember(name=name, description=MEMBER_DESCRIPTIONS[name],
                                          gradient_based=name in GRADIENT_MEMBERS, accuracy=None, not_run=skipped[name]))
        else:
            description, keys, seconds = details[name]
            members.append(AdaptiveMember(name=name, description=description, gradient_based=name in GRADIENT_MEMBERS,
                                          accuracy=member_accuracy[name], runs=keys, seconds_per_image=seconds / max(1, n)))

    gradient_accs = [member_accuracy[m] for m in active if m in member_accuracy]
    others = {m: a for m, a in member_accuracy.items() if m not in GRADIENT_MEMBERS}
    masking_label = eps_label(settings.masking_eps) if settings.masking_eps is not None else ""
    masking = masking_reasons(min(gradient_accs) if gradient_accs else None, others, high_eps_accuracy, masking_label, n)
    modes = [f"{m}+eot({draws})" if m in GRADIENT_MEMBERS and defense.randomized else
             "queries" if m == "square" else m for m in member_accuracy]
    return AdaptiveResult(
        accuracy=float(robust.mean()) if n else float("nan"), robust=robust, members=members, checks=checks,
        masking_eps_accuracy=high_eps_accuracy, masking=masking, masking_assessed=bool(gradient_accs),
        gradient_mode=", ".join(modes), effort=(steps, draws),
    )


def transfer_description(keys: list[str]) -> str:
    """What the ``transfer`` member ran: the non-adaptive attacks' images (crafted on the
    undefended model), defended — one attack's figure is its non-adaptive row's, several give
    their worst case per image."""
    if len(keys) == 1:
        return f"the non-adaptive {keys[0]} images (crafted on the undefended model), defended: its figure above"
    return f"worst case per image of the non-adaptive {', '.join(keys)} images (crafted on the undefended model), defended"
