"""The attack stages: every configured attack white-box on the model, transferred from each
surrogate, the epsilon sweeps, and the transfer matrix. Each (attack, epsilon, source) is a
resumable batched stage whose adversarial images are kept (8-bit, exact)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from medrobust.attacks.registry import attack_parameters, build_attack
from medrobust.components import parse_number
from medrobust.data.similarity import l2_distance, linf_distance, psnr, ssim
from medrobust.evaluation.attack_success import attack_success
from medrobust.evaluation.batches import from_uint8, run_batched, to_uint8
from medrobust.evaluation.classification import accuracy_drop_pp, classification_report, dangerous_flips
from medrobust.evaluation.crafting import craft_batch
from medrobust.evaluation.results import AttackOutcome, Perturbation, SweepPoint, TransferMatrix
from medrobust.evaluation.samples import array_key


@dataclass
class AttackRun:
    """Raw results of one attack stage on the attack subset."""

    key: str
    name: str
    eps: float
    params: dict[str, Any]
    source: str
    x_adv: torch.Tensor
    pred: np.ndarray  # the model's predictions on x_adv
    seconds: float


def attack_eps(name: str, params: dict[str, Any]) -> float:
    """The budget an attack will use: its eps parameter or its default (0 for unbounded ones)."""
    if "eps" in params:
        return parse_number(params["eps"])
    signature = attack_parameters(name)
    return float(signature["eps"][1]) if "eps" in signature else 0.0


def run_attack_stage(stage_root: Path, key: str, name: str, params: dict[str, Any], crafter: nn.Module,
                     target: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
                     device: torch.device, advance=None, allow_large_eps: bool = False) -> AttackRun:
    """Craft on ``crafter``, predict with ``target``; resumable per batch."""
    attack = build_attack(name, allow_large_eps=allow_large_eps, **params)

    def one_batch(_: int, sl: slice) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        xb, yb = x[sl].to(device), y[sl].to(device)
        x_adv, outputs = craft_batch(attack, crafter, target, xb, yb, seed, sl.start)
        return {"x_adv": to_uint8(x_adv), "pred": outputs.labels.numpy(), "seconds": np.array([time.perf_counter() - t0])}

    out = run_batched(stage_root / array_key(key), len(x), batch_size, one_batch, advance)
    source = "white-box" if crafter is target else key.split(" from ", 1)[-1]
    return AttackRun(key=key, name=name, eps=attack_eps(name, params), params=dict(params), source=source,
                     x_adv=from_uint8(out["x_adv"]), pred=out["pred"], seconds=float(out["seconds"].sum()))


def attack_outcome(run: AttackRun, x: torch.Tensor, y: np.ndarray, clean_pred: np.ndarray,
                   classes: list[str], normal: int | None, emergency: Sequence[int] = ()) -> AttackOutcome:
    """Everything the report says about one attack run. ``normal``: the normal class's index
    (None: dangerous flips not assessed); ``emergency``: the emergency findings' indices."""
    clean = classification_report(y, clean_pred, classes)
    adv = classification_report(y, run.pred, classes)
    success = attack_success(y, clean_pred, run.pred)
    xn, an = x.numpy(), run.x_adv.numpy()
    psnr_values = psnr(xn, an)
    finite = psnr_values[np.isfinite(psnr_values)]
    return AttackOutcome(
        key=run.key, attack=run.name, eps=run.eps, params={k: str(v) for k, v in run.params.items()},
        source=run.source, clean=clean, adversarial=adv, success_rate_all=success.success_rate_all,
        success_rate_correct=success.success_rate_correct, n_correct_before=success.n_correct_before,
        accuracy_drop_pp=accuracy_drop_pp(clean, adv),
        dangerous_flips=dangerous_flips(y, clean_pred, run.pred, classes, normal, emergency),
        perturbation=Perturbation(
            linf_mean=float(linf_distance(xn, an).mean()), linf_max=float(linf_distance(xn, an).max()),
            l2_mean=float(l2_distance(xn, an).mean()), ssim_mean=float(ssim(xn, an).mean()),
            psnr_mean_db=float(finite.mean()) if len(finite) else None,
        ),
        seconds_per_image=run.seconds / max(1, len(x)),
    )


def sweep_points(runs: list[AttackRun], y: np.ndarray) -> list[SweepPoint]:
    return sorted((SweepPoint(eps=r.eps, accuracy=float((r.pred == y).mean())) for r in runs), key=lambda p: p.eps)


def transfer_matrix_from_images(attack_key: str, adversarial: dict[str, torch.Tensor], models: dict[str, nn.Module],
                    x: torch.Tensor, y: np.ndarray) -> TransferMatrix:
    """Success of images crafted on each source (rows) against each model (columns).

    It crafts nothing: it takes the images the runner's resumable attack stages already crafted
    and stored (:func:`run_attack_stage`), so each source's images are crafted once and scored
    on every target. Each cell is :func:`~medrobust.evaluation.attack_success.attack_success`
    of the target's clean and adversarial predictions: over all images, and over the images the
    target classified correctly before the attack (None when it got none right).

    ``adversarial``: source name -> images crafted on that source (a surrogate, or an
    :class:`~medrobust.models.ensemble.EnsembleClassifier` of several); ``models``: every model
    by name (targets). The diagonal is the white-box success.
    """
    sources = list(adversarial)
    targets = list(models)
    rate, rate_ok = [], []
    clean_pred = {t: models[t].predict(x).numpy() for t in targets}
    for s in sources:
        row, row_ok = [], []
        for t in targets:
            success = attack_success(y, clean_pred[t], models[t].predict(adversarial[s]).numpy())
            row.append(success.success_rate_all)
            row_ok.append(success.success_rate_correct)
        rate.append(row)
        rate_ok.append(row_ok)
    return TransferMatrix(attack=attack_key, sources=sources, targets=targets, success_rate=rate,
                          success_rate_correct=rate_ok)
