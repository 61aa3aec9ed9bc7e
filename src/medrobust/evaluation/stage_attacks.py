"""The attack stages: every configured attack white-box on the model, transferred from each
surrogate, the epsilon sweeps, and the transfer matrix. Each (attack, epsilon, source) is a
resumable batched stage whose adversarial images are kept (8-bit, exact) in its batch files;
only per-image summaries (decisions, perturbation sizes) are held in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.attacks.registry import attack_parameters
from medrobust.components import parse_number
from medrobust.evaluation.attack_success import attack_success
from medrobust.evaluation.batches import StageResult, run_stage
from medrobust.evaluation.classification import accuracy_drop_pp, classification_report, dangerous_flips
from medrobust.evaluation.results import AttackOutcome, Perturbation, SweepPoint, TransferMatrix
from medrobust.evaluation.samples import array_key
from medrobust.evaluation.units import CraftUnit, ModelRef, PredictUnit


@dataclass
class AttackRun:
    """One finished attack stage on the attack subset: its per-image summaries in memory, its
    adversarial images in the stage's batch files (:attr:`stage`)."""

    key: str
    name: str
    eps: float
    params: dict[str, Any]
    source: str
    stage: StageResult
    seconds: float

    @property
    def pred(self) -> np.ndarray:
        """The target's decisions on the adversarial images."""
        return self.stage.summary["pred"]


CRAFT_KEYS = frozenset({"x_adv", "pred", "linf", "l2", "ssim", "psnr", "seconds"})


def attack_eps(name: str, params: dict[str, Any]) -> float:
    """The budget an attack will use: its eps parameter or its default (0 for unbounded ones)."""
    if "eps" in params:
        return parse_number(params["eps"])
    signature = attack_parameters(name)
    return float(signature["eps"][1]) if "eps" in signature else 0.0


def run_attack_stage(engine, stage_root: Path, key: str, name: str, params: dict[str, Any], crafter: ModelRef,
                     target: ModelRef, inputs: StageResult, batch_size: int, seed: int, advance=None,
                     allow_large_eps: bool = False, source: str = "white-box") -> AttackRun:
    """Craft on ``crafter``, predict with ``target``, batch by batch over the attack subset
    (``inputs``: its clean images and labels); resumable per batch."""
    labels = inputs.summary["labels"]

    def unit(b: int, sl: slice) -> CraftUnit:
        return CraftUnit(seed=seed, start=sl.start, attack=name, params=dict(params), allow_large_eps=allow_large_eps,
                         crafter=crafter, target=target, clean=inputs.images(b, "clean"), labels=labels[sl])

    stage = run_stage(engine, stage_root / array_key(key), len(labels), batch_size, unit, advance, CRAFT_KEYS)
    return AttackRun(key=key, name=name, eps=attack_eps(name, params), params=dict(params), source=source,
                     stage=stage, seconds=float(stage.summary["seconds"].sum()))


def predict_stage(engine, folder: Path, model: ModelRef, images: StageResult, key: str, batch_size: int, seed: int,
                  n: int, advance=None) -> StageResult:
    """``model``'s decisions (through its defense, if any) on a stage's images (``key``: ``clean``
    or ``x_adv``), batch by batch; resumable."""

    def unit(b: int, sl: slice) -> PredictUnit:
        return PredictUnit(seed=seed, start=sl.start, model=model, images=images.images(b, key))

    return run_stage(engine, folder, n, batch_size, unit, advance, frozenset({"pred", "seconds"}))


def attack_outcome(run: AttackRun, y: np.ndarray, clean_pred: np.ndarray,
                   classes: list[str], normal: int | None, emergency: Sequence[int] = ()) -> AttackOutcome:
    """Everything the report says about one attack run. ``normal``: the normal class's index
    (None: dangerous flips not assessed); ``emergency``: the emergency findings' indices."""
    clean = classification_report(y, clean_pred, classes)
    adv = classification_report(y, run.pred, classes)
    success = attack_success(y, clean_pred, run.pred)
    summary = run.stage.summary
    psnr_values = summary["psnr"]
    finite = psnr_values[np.isfinite(psnr_values)]
    return AttackOutcome(
        key=run.key, attack=run.name, eps=run.eps, params={k: str(v) for k, v in run.params.items()},
        source=run.source, clean=clean, adversarial=adv, success_rate_all=success.success_rate_all,
        success_rate_correct=success.success_rate_correct, n_correct_before=success.n_correct_before,
        accuracy_drop_pp=accuracy_drop_pp(clean, adv),
        dangerous_flips=dangerous_flips(y, clean_pred, run.pred, classes, normal, emergency),
        perturbation=Perturbation(
            linf_mean=float(summary["linf"].mean()), linf_max=float(summary["linf"].max()),
            l2_mean=float(summary["l2"].mean()), ssim_mean=float(summary["ssim"].mean()),
            psnr_mean_db=float(finite.mean()) if len(finite) else None,
        ),
        seconds_per_image=run.seconds / max(1, len(y)),
    )


def sweep_points(runs: list[AttackRun], y: np.ndarray) -> list[SweepPoint]:
    return sorted((SweepPoint(eps=r.eps, accuracy=float((r.pred == y).mean())) for r in runs), key=lambda p: p.eps)


def transfer_matrix(attack_key: str, sources: list[str], targets: list[str], clean_pred: dict[str, np.ndarray],
                    adv_pred: dict[tuple[str, str], np.ndarray], y: np.ndarray) -> TransferMatrix:
    """Success of images crafted on each source (rows) against each model (columns).

    It crafts nothing: it scores the images the runner's resumable attack stages already crafted
    and stored (:func:`run_attack_stage`), so each source's images are crafted once and scored
    on every target. ``adv_pred[(source, target)]``: the target's decisions on the source's
    images; ``clean_pred[target]``: its decisions on the clean images. Each cell is
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
