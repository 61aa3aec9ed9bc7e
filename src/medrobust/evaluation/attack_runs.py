"""The building blocks the attack, transfer, defense and adaptive stages share: one attack run on
the attack subset, and one model's decisions on a stage's images, each a resumable batched stage
of units of work (:mod:`medrobust.execution`).

An attack run crafts on one model (the model itself: white-box; a surrogate: transfer; the
defended model: adaptive) and is scored on another; its adversarial images stay (8-bit, exact)
in its batch files and only per-image summaries (decisions, perturbation sizes) are held in
memory. Its folder is its :class:`~medrobust.evaluation.stage_keys.StageKey`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.attacks.registry import attack_parameters
from medrobust.evaluation.stage_keys import StageKey
from medrobust.execution.resumable_stage import StageResult, run_stage
from medrobust.execution.units import CraftUnit, ModelRef, PredictUnit
from medrobust.specs.components import parse_number

CRAFT_KEYS = frozenset({"x_adv", "pred", "linf", "l2", "ssim", "psnr", "seconds"})


@dataclass
class AttackRun:
    """One finished attack stage on the attack subset: its per-image summaries in memory, its
    adversarial images in the stage's batch files (:attr:`stage`). ``source``: ``white-box``, the
    surrogate it was crafted on, or ``adaptive vs SPEC``."""

    stage_key: StageKey
    name: str
    eps: float
    params: dict[str, Any]
    source: str
    stage: StageResult
    seconds: float

    @property
    def key(self) -> str:
        """The run's label (``pgd@8/255``): how metrics.json and the report name it."""
        return self.stage_key.label

    @property
    def pred(self) -> np.ndarray:
        """The target's decisions on the adversarial images."""
        return self.stage.summary["pred"]


def attack_eps(name: str, params: dict[str, Any]) -> float:
    """The budget an attack will use: its eps parameter or its default (0 for unbounded ones)."""
    if "eps" in params:
        return parse_number(params["eps"])
    signature = attack_parameters(name)
    return float(signature["eps"][1]) if "eps" in signature else 0.0


def run_attack_stage(engine, stage_root: Path, key: StageKey, name: str, params: dict[str, Any], crafter: ModelRef,
                     target: ModelRef, inputs: StageResult, batch_size: int, seed: int, advance=None,
                     allow_large_eps: bool = False, source: str = "white-box") -> AttackRun:
    """Craft on ``crafter``, predict with ``target``, batch by batch over the attack subset
    (``inputs``: its clean images and labels) in ``stage_root / key.folder``; resumable per batch."""
    labels = inputs.summary["labels"]

    def unit(b: int, sl: slice) -> CraftUnit:
        return CraftUnit(seed=seed, start=sl.start, attack=name, params=dict(params), allow_large_eps=allow_large_eps,
                         crafter=crafter, target=target, clean=inputs.images(b, "clean"), labels=labels[sl])

    stage = run_stage(engine, stage_root / key.folder, len(labels), batch_size, unit, advance, CRAFT_KEYS)
    return AttackRun(stage_key=key, name=name, eps=attack_eps(name, params), params=dict(params), source=source,
                     stage=stage, seconds=float(stage.summary["seconds"].sum()))


def predict_stage(engine, folder: Path, model: ModelRef, images: StageResult, key: str, batch_size: int, seed: int,
                  n: int, advance=None) -> StageResult:
    """``model``'s decisions (through its defense, if any) on a stage's images (``key``: ``clean``
    or ``x_adv``), batch by batch; resumable."""

    def unit(b: int, sl: slice) -> PredictUnit:
        return PredictUnit(seed=seed, start=sl.start, model=model, images=images.images(b, key))

    return run_stage(engine, folder, n, batch_size, unit, advance, frozenset({"pred", "seconds"}))
