"""The adaptive stage of one defense: every member of the portfolio, the EOT and step doubling
checks, the worst case per image and the gradient-masking flags (the rules are
:mod:`medrobust.evaluation.adaptive_portfolio`'s). Every run is a resumable attack stage; the
checks' decisions are functions of finished stages, so a restarted run takes the same path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.evaluation.adaptive_portfolio import (
    GRADIENT_MEMBERS,
    MEMBER_DESCRIPTIONS,
    DoublingCheck,
    accuracy_noise,
    double_until_converged,
    masking_reasons,
    worst_case,
)
from medrobust.evaluation.attack_runs import AttackRun, run_attack_stage
from medrobust.evaluation.results import AdaptiveMember, ConvergenceCheck
from medrobust.evaluation.stage_keys import gradient_adaptive_key, square_adaptive_key
from medrobust.execution.progress import Progress, SilentProgress
from medrobust.execution.units import ModelRef
from medrobust.specs.components import eps_label, eps_text

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
    budget_unit: str = "grey levels"  # the data's unit, that the masking check's budget is stated in ("HU" on CT)
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
    query_runs: list[AttackRun] = field(default_factory=list)  # the Square member's run (its images: the guard's too)


def _check(check: DoublingCheck) -> ConvergenceCheck:
    return ConvergenceCheck(quantity=check.quantity, values=list(check.values), accuracies=list(check.accuracies),
                            tolerance=check.tolerance, converged=check.converged, text=check.text())


def run_portfolio(engine, spec: str, settings: AdaptiveSettings, y: np.ndarray, clean_pred: np.ndarray,
                  target: ModelRef, inputs, transfer: dict[str, np.ndarray], stage_root: Path, batch_size: int,
                  seed: int, progress: Progress | None = None, eps: float | None = None,
                  effort: tuple[int, int] | None = None) -> AdaptiveResult:
    """Run the portfolio against defense ``spec`` at budget ``eps`` (default ``settings.eps``).

    Args:
        engine: where the units run.
        spec: the defense's spec.
        settings: the portfolio (the configuration's ``adaptive`` section, at the main budget).
        y: the attack subset's labels.
        clean_pred: the defended model's decisions on the clean images.
        target: the defended model as evaluated (its decisions count).
        inputs: the clean attack subset (a stored stage).
        transfer: {key: the defended model's decisions on images crafted on the undefended model
            at that budget} (the ``transfer`` member).
        stage_root: the folder the members' stages are kept in.
        batch_size: images per unit.
        seed: the run's seed (a restart adds :data:`RESTART_SEED_STRIDE` per restart).
        progress: where each member's run reports. Default None: silent.
        eps: the budget. Default None: ``settings.eps``.
        effort: (steps, EOT draws) reached by the checks at the main budget: given, the gradient
            members run with it (one start each) and neither the doubling checks nor the masking
            check run again (a budget of the sweep).

    Returns:
        The worst case per image over the members, each member's own accuracy, the checks and
        the gradient-masking flags.
    """
    portfolio = _Portfolio(engine, spec, settings, y, target, inputs, stage_root, batch_size, seed,
                           progress or SilentProgress(), settings.eps if eps is None else eps)
    skipped = portfolio.skipped_members()
    active = [m for m in settings.portfolio if m in GRADIENT_MEMBERS and m not in skipped]
    gradient = portfolio.gradient_members(active, effort)
    rights, details = portfolio.run_members(active, gradient, transfer, skipped, effort is None)
    return portfolio.result(clean_pred, active, gradient, rights, details, skipped)


@dataclass
class _Gradient:
    """The gradient members' runs, the checks that decided their effort, and the masking check."""

    runs: dict[str, list[AttackRun]]
    checks: list[ConvergenceCheck]
    steps: int
    draws: int
    high_eps_accuracy: float | None = None


class _Portfolio:
    """The portfolio against one defense at one budget (see :func:`run_portfolio`)."""

    def __init__(self, engine, spec: str, settings: AdaptiveSettings, y: np.ndarray, target: ModelRef, inputs,
                 stage_root: Path, batch_size: int, seed: int, progress: Progress, budget: float) -> None:
        from medrobust.attacks.registry import attack_parameters, build_attack
        from medrobust.defenses.defended import DEFAULT_EOT_SAMPLES
        from medrobust.defenses.registry import build_defense

        self.engine, self.spec, self.settings, self.y, self.target, self.inputs = engine, spec, settings, y, target, inputs
        self.stage_root, self.batch_size, self.seed, self.progress, self.budget = stage_root, batch_size, seed, progress, budget
        self.defense = build_defense(spec)
        self.n = len(y)
        self.query_runs: list[AttackRun] = []
        self.base = {k: v for k, v in settings.params.items() if k != "eps"}
        signature = attack_parameters(settings.attack)
        self.has_steps = "steps" in signature
        self.first_steps = int(self.base.pop("steps", signature["steps"][1] if self.has_steps else 1))
        self.uses_gradients = bool(getattr(build_attack(settings.attack), "needs_gradients", True))
        self.eot_start = int(settings.eot_samples or (DEFAULT_EOT_SAMPLES if self.defense.randomized else 1))

    def right(self, run: AttackRun) -> np.ndarray:
        return run.pred == self.y

    def gradient_run(self, member: str, steps: int, draws: int, restart: int = 0, eps: float | None = None) -> AttackRun:
        settings, spec = self.settings, self.spec
        eps = self.budget if eps is None else eps
        run_seed = self.seed + restart * RESTART_SEED_STRIDE
        params = {**self.base, "eps": eps, "seed": run_seed}
        if self.has_steps:
            params["steps"] = steps
        if "alpha" in self.base and eps != settings.eps:  # a step size set for the budget scales with it
            params["alpha"] = float(self.base["alpha"]) * eps / settings.eps
        key = gradient_adaptive_key(settings.attack, eps, member, steps if self.has_steps else None,
                                    draws if self.defense.randomized else None, restart, spec)
        crafter = ModelRef("model", defense=spec, eot_samples=draws, gradient=member)
        with self.progress.stage(f"defense {spec}: {key.short}", self.n) as bar:
            return run_attack_stage(self.engine, self.stage_root, key, settings.attack, params, crafter, self.target,
                                    self.inputs, self.batch_size, run_seed, bar.advance, allow_large_eps=True,
                                    source=f"adaptive vs {spec}")

    def skipped_members(self) -> dict[str, str]:
        """Members that cannot run, or would repeat another: member -> why."""
        from medrobust.defenses.defended import defense_routes

        settings, spec, defense = self.settings, self.spec, self.defense
        gradient_members = [m for m in settings.portfolio if m in GRADIENT_MEMBERS]
        skipped: dict[str, str] = {}
        if gradient_members and not settings.differentiable_model:
            skipped.update({m: "not run: the model gives no gradients (a black box)" for m in gradient_members})
        elif gradient_members and not self.uses_gradients:
            skipped.update({m: f"not run: the adaptive attack {settings.attack} uses no gradients"
                            for m in gradient_members})
        if "smooth" in gradient_members and all(route != "smooth" for _, route, _ in defense_routes(defense, "smooth")):
            skipped.setdefault("smooth", f"not run: no member of {spec} without gradients has a smooth approximation "
                                         "(the same attack as unrolled)")
        if "bpda" in gradient_members and all(route != "exact" for _, route, _ in defense_routes(defense, "unrolled")):
            skipped.setdefault("bpda", f"not run: no member of {spec} has exact gradients (the same attack as unrolled)")
        return skipped

    def gradient_members(self, active: list[str], effort: tuple[int, int] | None) -> _Gradient:
        """Run the gradient members: with ``effort`` as given, or with the first member's EOT and
        step doubling checks deciding it (then its restarts, the others, and the masking check)."""
        if effort is not None:
            return _Gradient({m: [self.gradient_run(m, *effort)] for m in active}, [], *effort)
        out = _Gradient({}, [], self.first_steps, self.eot_start)
        if not active:
            return out
        primary = active[0]
        primary_runs: dict[str, AttackRun] = {}  # by key: the EOT and step checks share a run

        def primary_run(steps: int, draws: int, restart: int = 0) -> AttackRun:
            run = self.gradient_run(primary, steps, draws, restart)
            primary_runs[run.key] = run
            return run

        if self.defense.randomized:
            check = double_until_converged("EOT draws", out.draws, self.settings.max_eot_samples,
                                           lambda d: float(self.right(primary_run(out.steps, d)).mean()),
                                           lambda acc: accuracy_noise(acc, self.n))
            out.checks.append(_check(check))
            out.draws = check.values[-1]
        if self.has_steps:
            check = double_until_converged("steps", out.steps, self.settings.max_steps,
                                           lambda t: float(self.right(primary_run(t, out.draws)).mean()),
                                           lambda acc: 1.0 / max(1, self.n))
            out.checks.append(_check(check))
            out.steps = check.values[-1]
        for restart in range(1, self.settings.restarts):
            primary_run(out.steps, out.draws, restart)
        out.runs[primary] = list(primary_runs.values())
        for member in active[1:]:
            out.runs[member] = [self.gradient_run(member, out.steps, out.draws)]
        masking_eps = self.settings.masking_eps
        if masking_eps is not None and masking_eps > self.budget:
            high = self.gradient_run(primary, out.steps, out.draws, eps=masking_eps)  # at the converged effort
            out.high_eps_accuracy = float(self.right(high).mean())
        return out

    def run_members(self, active: list[str], gradient: _Gradient, transfer: dict[str, np.ndarray],
                    skipped: dict[str, str], checked: bool) -> tuple[dict, dict]:
        """Each member's per-image rights and (description, run keys, seconds); a transfer member
        without images is added to ``skipped``. ``checked``: the effort came from this budget's checks."""
        rights: dict[str, list[np.ndarray]] = {}
        details: dict[str, tuple[str, list[str], float]] = {}
        budget = eps_label(self.budget)
        for name in self.settings.portfolio:
            if name in skipped:
                continue
            if name in GRADIENT_MEMBERS:
                chosen = gradient.runs[name]
                rights[name] = [self.right(r) for r in chosen]
                details[name] = (self._gradient_description(name, active, gradient, checked), [r.key for r in chosen],
                                 sum(r.seconds for r in chosen))
            elif name == "square":
                run = self._square_run()
                self.query_runs.append(run)
                rights[name] = [self.right(run)]
                details[name] = (f"square@{budget}, {self.settings.square_queries} queries to the defended model",
                                 [run.key], run.seconds)
            elif transfer:
                rights[name] = [pred == self.y for pred in transfer.values()]
                details[name] = (transfer_description(list(transfer)), list(transfer), 0.0)
            else:
                skipped[name] = f"not run: no attack was crafted on the undefended model at {budget}"
        return rights, details

    def _gradient_description(self, name: str, active: list[str], gradient: _Gradient, checked: bool) -> str:
        from medrobust.defenses.defended import gradient_route

        first = name == active[0] and checked
        step_text = f", {gradient.steps} steps" if self.has_steps else ""
        step_text += (f" (doubled from {self.first_steps})" if first and self.has_steps
                      and gradient.steps != self.first_steps else "")
        eot_text = f", EOT over {gradient.draws} draws" if self.defense.randomized else ""
        restart_text = f", {self.settings.restarts} random starts" if first and self.settings.restarts > 1 else ""
        return (f"{self.settings.attack}@{eps_label(self.budget)}{step_text}{eot_text}{restart_text}; "
                f"{gradient_route(self.defense, name)}")

    def _square_run(self) -> AttackRun:
        key = square_adaptive_key(self.budget, self.settings.square_queries, self.spec)
        with self.progress.stage(f"defense {self.spec}: {key.short}", self.n) as bar:
            return run_attack_stage(self.engine, self.stage_root, key, "square",
                                    {"eps": self.budget, "queries": self.settings.square_queries, "seed": self.seed},
                                    self.target, self.target, self.inputs, self.batch_size, self.seed, bar.advance,
                                    allow_large_eps=True, source=f"adaptive vs {self.spec}")

    def result(self, clean_pred: np.ndarray, active: list[str], gradient: _Gradient, rights: dict, details: dict,
               skipped: dict[str, str]) -> AdaptiveResult:
        """The worst case per image, each member's accuracy and the gradient-masking flags."""
        n, settings = self.n, self.settings
        robust, member_accuracy = worst_case(clean_pred == self.y, rights)
        members = []
        for name in settings.portfolio:
            if name in skipped:
                members.append(AdaptiveMember(name=name, description=MEMBER_DESCRIPTIONS[name],
                                              gradient_based=name in GRADIENT_MEMBERS, accuracy=None,
                                              not_run=skipped[name]))
            else:
                description, keys, seconds = details[name]
                members.append(AdaptiveMember(name=name, description=description,
                                              gradient_based=name in GRADIENT_MEMBERS, accuracy=member_accuracy[name],
                                              runs=keys, seconds_per_image=seconds / max(1, n)))
        gradient_accs = [member_accuracy[m] for m in active if m in member_accuracy]
        others = {m: a for m, a in member_accuracy.items() if m not in GRADIENT_MEMBERS}
        masking_label = (eps_text(settings.masking_eps, settings.budget_unit) if settings.masking_eps is not None
                         else "")
        masking = masking_reasons(min(gradient_accs) if gradient_accs else None, others, gradient.high_eps_accuracy,
                                  masking_label, n)
        modes = [f"{m}+eot({gradient.draws})" if m in GRADIENT_MEMBERS and self.defense.randomized else
                 "queries" if m == "square" else m for m in member_accuracy]
        return AdaptiveResult(
            accuracy=float(robust.mean()) if n else float("nan"), robust=robust, members=members,
            checks=gradient.checks, masking_eps_accuracy=gradient.high_eps_accuracy, masking=masking,
            masking_assessed=bool(gradient_accs), gradient_mode=", ".join(modes), effort=(gradient.steps, gradient.draws),
            query_runs=list(self.query_runs),
        )


def transfer_description(keys: list[str]) -> str:
    """What the ``transfer`` member ran: the non-adaptive attacks' images (crafted on the
    undefended model), defended — one attack's figure is its non-adaptive row's, several give
    their worst case per image."""
    if len(keys) == 1:
        return f"the non-adaptive {keys[0]} images (crafted on the undefended model), defended: its figure above"
    return f"worst case per image of the non-adaptive {', '.join(keys)} images (crafted on the undefended model), defended"
