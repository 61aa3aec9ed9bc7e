"""The guard stage: the guard ``mr.guard.from_run`` serves, attacked by one who knows it.

The guard (``guard:`` of the configuration, :mod:`medrobust.evaluation.config_guard`) is one of
the run's defenses in front of the model and the run's reference-free detectors (squeeze), with
the thresholds the detection stage calibrates (:func:`~medrobust.evaluation.stages.detection.squeeze_calibration`:
the same calibration images or cross-fitted folds, so each image is judged with the threshold
the detection stage judges it with). Its decisions follow :mod:`medrobust.detection.guard_decision`,
the rule :class:`~medrobust.layer.guard.Guard` serves with.

At each budget of the run's grid (:func:`~medrobust.evaluation.scorecard.grid_budgets`), the
attacker's portfolio (worst case per image: :mod:`medrobust.evaluation.guard_figures`):

``unchanged``     the clean image itself (the guard's own mistakes count);
``non-adaptive``  the white-box attacks' images at that budget, already on disk (crafted on the
                  bare model, ignoring the guard);
``square through the defense``  the defense's adaptive Square images at that budget, when its
                  portfolio ran Square (queries to the defended model: it knows the defense, not
                  the detectors; with a black-box model, the strongest member here);
``lambda=L``      Carlini & Wagner 2017's guard-aware attacker: PGD on the defended model (the
                  defense's gradient route, ``unrolled`` by default: exact where it has
                  gradients, BPDA elsewhere) ascending ``CE - L x sum_d relu(s_d - (1 - m) t_d) / t_d``,
                  ``s_d`` each detector's differentiable score (feature squeezing's L1 distances
                  through its squeezers: BPDA, the identity backward, through bit depth and JPEG);
                  ``L = 0`` ignores the detectors.

Every image is rounded to the 8-bit grid inside the L-inf ball, as every attack image of a run.
With surrogates, their transfer images at each budget also go through the guard (a row of their
own). Each (member, budget) is a resumable stage of units (:mod:`medrobust.execution.guard_units`)
under ``stages/guard/<settings>/``, seeded per (stage, batch); the outcome is kept there as
``guard.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from medrobust.evaluation.attack_runs import AttackRun
from medrobust.evaluation.config_guard import describe_guard
from medrobust.evaluation.context import RunContext
from medrobust.evaluation.guard_figures import DEFINITION, Judged, MemberRuns, clean_figures, worst_case
from medrobust.evaluation.results import QUERY_MEMBER, GuardBudget, GuardOutcome
from medrobust.evaluation.run_dir import cached_json
from medrobust.evaluation.stage_keys import folder_name
from medrobust.evaluation.stages.attacks import Attacks
from medrobust.evaluation.stages.defenses import Defenses
from medrobust.execution.guard_units import JUDGE_KEYS, GuardAttackUnit, GuardJudgeUnit
from medrobust.execution.resumable_stage import StageResult, run_stage
from medrobust.specs.components import eps_label

log = logging.getLogger(__name__)


def settings_folder(settings: dict) -> str:
    """The folder of one guard's stages: its defense and a digest of its resolved settings, so a
    changed guard is measured afresh beside the old one."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return folder_name(settings["defense"] or "no-defense", digest)


def run(ctx: RunContext, attacks: Attacks, defenses: Defenses | None = None) -> GuardOutcome | None:
    """The guard stage (module docstring); None when the configuration has no enabled guard.

    Args:
        ctx: the run's context.
        attacks: the attack stage's outcome (its white-box and transferred images are members).
        defenses: the defense stage's outcome (its adaptive Square images against the guard's
            defense are a member). Default None: no such member.

    Returns:
        The :class:`~medrobust.evaluation.results.GuardOutcome`, also kept as ``guard.json`` in
        the stage's folder and read back from there on a resumed run.
    """
    cfg = ctx.config.guard
    if cfg is None or not cfg.enabled:
        return None
    settings = describe_guard(cfg, ctx.config.defenses, ctx.config.detectors)
    root = ctx.stages / "guard" / settings_folder(settings)
    queried = defenses.query_runs.get(settings["defense"], []) if defenses is not None and settings["defense"] else []
    return cached_json(root / "guard.json", GuardOutcome,
                       lambda: _GuardStage(ctx, attacks, settings, root, queried).outcome())


class _GuardStage:
    """One guard's stage: its thresholds, then every member at every budget."""

    def __init__(self, ctx: RunContext, attacks: Attacks, settings: dict, root: Path,
                 queried: list[AttackRun] | None = None) -> None:
        self.ctx, self.attacks, self.settings, self.root = ctx, attacks, settings, root
        self.queried = list(queried or [])  # the defense's adaptive Square runs, every budget
        self.defense = settings["defense"]
        self.detectors, self.thresholds, self.threshold_text, self.calibration = self._detectors()
        self.seconds = 0.0

    def _detectors(self) -> tuple[dict, dict[str, np.ndarray], dict[str, dict[str, float]], str]:
        """The detectors, calibrated the detection stage's way, and each image's threshold."""
        from medrobust.detection.squeeze import SqueezeDetector
        from medrobust.evaluation.stages.detection import squeeze_calibration

        detectors, thresholds, text, notes = {}, {}, {}, []
        if "squeeze" in self.settings["detectors"]:
            sq = self.ctx.config.detectors.squeeze
            det = SqueezeDetector(sq.squeezers, target_fpr=self.settings["fpr"] or sq.target_fpr)
            per_image, per_fold, note = squeeze_calibration(self.ctx, det, det.target_fpr, quiet=True)
            if per_image is None:
                per_image = np.full(self.ctx.n, float(det.threshold))
                text["squeeze"] = {"score": float(det.threshold)}
            else:
                text["squeeze"] = {"score": float(np.mean(per_fold)), "min": float(min(per_fold)),
                                   "max": float(max(per_fold)), "folds": float(len(per_fold))}
            detectors["squeeze"], thresholds["squeeze"] = det, per_image
            notes.append(f"squeeze: {note}")
        return detectors, thresholds, text, "; ".join(notes)

    def _batch_thresholds(self, sl: slice) -> dict[str, np.ndarray]:
        return {name: t[sl] for name, t in self.thresholds.items()}

    def judged(self, folder: str, images: StageResult, key: str, title: str) -> Judged:
        """The guard's judgement of a stage's images (``key``: ``clean`` or ``x_adv``), resumable."""
        ctx = self.ctx

        def unit(b: int, sl: slice) -> GuardJudgeUnit:
            return GuardJudgeUnit(seed=ctx.seed, start=sl.start, defense=self.defense, detectors=self.detectors,
                                  thresholds=self._batch_thresholds(sl), images=images.images(b, key))

        with ctx.progress.stage(title, ctx.n) as bar:
            stage = run_stage(ctx.engine, self.root / folder, ctx.n, ctx.batch_size, unit, bar.advance, JUDGE_KEYS)
        self.seconds += float(stage.summary["seconds"].sum())
        return Judged.of(stage.summary, ctx.labels)

    def attacked(self, lam: float, eps: float) -> tuple[str, Judged]:
        """The guard-aware attacker at weight ``lam`` and budget ``eps``, judged; resumable."""
        ctx, s = self.ctx, self.settings
        name = f"guard-aware pgd@{eps_label(eps)} lambda {lam:g} {s['steps']} steps"
        labels = ctx.labels

        def unit(b: int, sl: slice) -> GuardAttackUnit:
            return GuardAttackUnit(seed=ctx.seed, start=sl.start, defense=self.defense, gradient=s["gradient"],
                                   eot_samples=s["eot_samples"], detectors=self.detectors,
                                   thresholds=self._batch_thresholds(sl), lam=lam, margin=s["margin"], eps=eps,
                                   steps=s["steps"], clean=ctx.inputs.images(b, "clean"), labels=labels[sl])

        with ctx.progress.stage(f"guard: {name}", ctx.n) as bar:
            stage = run_stage(ctx.engine, self.root / folder_name(name), ctx.n, ctx.batch_size, unit, bar.advance,
                              JUDGE_KEYS)
        self.seconds += float(stage.summary["seconds"].sum())
        return name, Judged.of(stage.summary, labels)

    def runs_at(self, runs: list[AttackRun], eps: float) -> list[tuple[str, Judged]]:
        return [(run.key, self.judged(f"judge_{run.stage_key.folder}", run.stage, "x_adv", f"guard: {run.key}"))
                for run in runs if abs(run.eps - eps) < 1e-9]

    def outcome(self) -> GuardOutcome:
        from medrobust.evaluation.scorecard import grid_budgets

        ctx, s, on_flag = self.ctx, self.settings, self.settings["on_flag"]
        t0 = time.perf_counter()
        clean = self.judged("clean", ctx.inputs, "clean", "guard: clean images")
        unchanged = MemberRuns("unchanged", "the image unchanged: the guard's own mistakes count", [("clean", clean)])
        grid = grid_budgets(ctx.config.grid, [o for o in self.attacks.outcomes if o.eps > 0], self.attacks.sweeps,
                            ctx.parts["test"].grid.score_budget) or []
        white = [*self.attacks.white, *self.attacks.sweep]
        not_run = None if ctx.differentiable else "not run: the model gives no gradients (a black box)"
        budgets = []
        for eps in grid:
            plain = self.runs_at(white, eps)
            members = [unchanged, MemberRuns("non-adaptive", "the white-box attacks' images at this budget, crafted "
                                             "on the bare model (they ignore the guard)", plain,
                                             None if plain else "not run: no white-box attack ran at this budget")]
            queried = self.runs_at(self.queried, eps)
            if queried:
                members.append(MemberRuns(QUERY_MEMBER, "Square's queries to the defended model at this budget (the "
                                          "defense's adaptive member: it knows the defense, not the detectors)", queried))
            for lam in s["lambdas"]:
                what = (f"guard-aware PGD, {s['steps']} steps, lambda {lam:g}" +
                        (" (ignores the detectors)" if lam == 0 else f", margin {s['margin']:g} of each threshold"))
                members.append(MemberRuns(f"lambda={lam:g}", what, [] if not_run else [self.attacked(lam, eps)], not_run))
            budgets.append(worst_case(eps, members, on_flag))
        transfer: dict[str, list[GuardBudget]] = {}
        crafted = [*self.attacks.transferred, *self.attacks.transferred_sweep]
        for source in dict.fromkeys(run.source for run in crafted):
            points = []
            for eps in grid:
                runs = self.runs_at([r for r in crafted if r.source == source], eps)
                if runs:
                    points.append(worst_case(eps, [unchanged, MemberRuns(f"transfer from {source}", "crafted on the "
                                                                         f"surrogate {source}, ignoring the guard", runs)],
                                             on_flag))
            if points:
                transfer[source] = points
        log.info("guard stage: %d budgets measured in %.1fs", len(budgets), time.perf_counter() - t0)
        return GuardOutcome(
            defense=self.defense, detectors=list(self.detectors), thresholds=self.threshold_text,
            fpr=self.settings["fpr"] or (ctx.config.detectors.squeeze.target_fpr if self.detectors else None),
            calibration=self.calibration or "no detector", on_flag=on_flag, attacker=self.attacker_text(grid),
            lambdas=list(s["lambdas"]), steps=s["steps"], margin=s["margin"], gradient=s["gradient"],
            clean=clean_figures(clean, on_flag), budgets=budgets, transfer=transfer,
            seconds_per_image=self.seconds / max(1, ctx.n), definition=DEFINITION, not_run=not_run)

    def attacker_text(self, grid: list[float]) -> str:
        from medrobust.defenses.defended import gradient_route
        from medrobust.defenses.registry import build_defense

        s = self.settings
        route = gradient_route(build_defense(self.defense), s["gradient"]) if self.defense else "no defense"
        lams = ", ".join(f"{lam:g}" for lam in s["lambdas"])
        budgets = ", ".join(eps_label(e) for e in grid) or "none (no budget on the grid)"
        return (f"Carlini & Wagner's guard-aware attacker: PGD ({s['steps']} steps) on cross-entropy minus lambda x "
                f"each detector's score over its threshold, lambda in {{{lams}}} ({route}; the squeeze detector's "
                f"squeezers: BPDA through bit depth and JPEG), beside the unchanged and the non-adaptive images, "
                f"worst case per image, at L-inf {budgets}")
