"""``mr.attack``: adversarial images for a model, white-box or transferred from a surrogate,
with the success rates, the dangerous flips and the size of each perturbation.

Each batch goes through :func:`medrobust.execution.crafting.craft_batch`, the function the
runner's attack stages use: the same images, model, attack, seed and batch size give the same
adversarial images, predictions and success in ``mr.attack`` (``medrobust attack``) and in
``mr.evaluate`` (``medrobust evaluate``).
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrobust.data.class_names import (
    DEFAULT_EMERGENCY_FINDINGS,
    decision_name,
    find_classes,
    find_normal_class,
    match_classes,
)
from medrobust.data.image_size import read_side
from medrobust.data.stored_grid import EIGHT_BIT, StoredGrid
from medrobust.detection.model_outputs import model_outputs
from medrobust.evaluation.attack_success import AttackSuccess, attack_success
from medrobust.evaluation.classification import dangerous_flips
from medrobust.evaluation.results import DangerousFlip
from medrobust.execution.progress import Progress, SilentProgress
from medrobust.layer.images import open_images
from medrobust.layer.models import load_model
from medrobust.layer.outputs import OutputNames, write_images
from medrobust.models.contract import ModelContract

PERTURBATION_MEASURES = ("linf", "l2", "ssim", "psnr")


@dataclass
class AttackResult:
    """What an attack did to each image and overall. Per-image arrays have length N, in the
    order of ``ids``.

    Args:
        attack: the attack's settings, every parameter included (``Attack.describe()``).
        classes: the model's class names.
        ids: one per image attacked.
        labels: the true labels, as model class indices.
        pred_clean: the model's decisions on the clean images.
        pred_adv: its decisions on the adversarial images.
        confidence_clean: the probability of the decided class on each clean image
            (multi-label: of the least confident finding decision).
        confidence_adv: likewise on each adversarial image.
        perturbation: ``{measure: (N,) values}`` for ``linf``, ``l2``, ``ssim`` and ``psnr``
            (in dB; inf for an unchanged image).
        success: the success rates (:class:`~medrobust.evaluation.attack_success.AttackSuccess`).
        dangerous_flips: findings the attack made the model call normal; None when no class is
            identified as normal (not assessed).
        normal_class: the model's class taken as normal, or None.
        seconds: the attack's wall time.
        adversarial: the adversarial images on the 8-bit grid, or None (the default) when they
            were written to ``files`` instead.
        files: the images written, relative to the output folder; None (the default) when kept
            in memory.
        skipped: unreadable files, one line each. Default: empty.
        sources: the target, the surrogate, the data and the split, as given (for
            ``summary.json``). Default: empty.
        grid: the images' stored grid, whose unit the perturbation is stated in to a person
            (grey levels; HU for CT). Default the 8-bit grid.

    Shape:
        - adversarial: (N, C, H, W) float32 in [0, 1], on the 8-bit grid (CT volumes: (N, C, D, H, W)
          on the CT grid, integer HU).
        - labels, pred_clean, pred_adv, confidence_*: (N,); each perturbation measure: (N,).
    """

    attack: dict[str, Any]
    classes: list[str]
    ids: list[str]
    labels: np.ndarray
    pred_clean: np.ndarray
    pred_adv: np.ndarray
    confidence_clean: np.ndarray
    confidence_adv: np.ndarray
    perturbation: dict[str, np.ndarray]
    success: AttackSuccess
    dangerous_flips: list[DangerousFlip] | None
    normal_class: str | None
    seconds: float
    adversarial: torch.Tensor | None = None
    files: list[str] | None = None
    skipped: list[str] = field(default_factory=list)
    sources: dict[str, Any] = field(default_factory=dict)  # the target, the surrogate, the data and split, as given
    grid: StoredGrid = EIGHT_BIT

    def rows(self) -> list[dict[str, Any]]:
        """One dict per image, as ``attack.csv`` holds them."""
        out = []
        for i, item_id in enumerate(self.ids):
            row: dict[str, Any] = {"id": item_id}
            if self.files is not None:
                row["file"] = self.files[i]
            row.update({
                "true": self.classes[int(self.labels[i])],
                "pred_clean": decision_name(self.classes, int(self.pred_clean[i])),
                "conf_clean": round(float(self.confidence_clean[i]), 4),
                "pred_adv": decision_name(self.classes, int(self.pred_adv[i])),
                "conf_adv": round(float(self.confidence_adv[i]), 4),
                "flipped": int(self.pred_clean[i] != self.pred_adv[i]),
                **{k: round(float(v[i]), 6) for k, v in self.perturbation.items()},
            })
            out.append(row)
        return out

    def mean(self, measure: str) -> float | None:
        """The mean of a perturbation measure over the images (PSNR: over the changed ones; None if none)."""
        values = self.perturbation[measure]
        values = values[np.isfinite(values)]
        return float(values.mean()) if len(values) else None

    def summary(self) -> dict[str, Any]:
        """The attack's summary, as ``summary.json`` holds it.

        Returns:
            A strict-JSON-ready dict: the attack's settings, the success rates, the mean of each
            perturbation measure (:meth:`mean`), the seconds per image, the normal class, the
            dangerous flips, the files skipped and the sources as given.
        """
        return {
            "attack": self.attack, **self.success.to_json(),
            "mean_linf": self.mean("linf"), "mean_l2": self.mean("l2"), "mean_ssim": self.mean("ssim"),
            "mean_psnr_db": self.mean("psnr"), "seconds_per_image": self.seconds / max(1, len(self.ids)),
            "normal_class": self.normal_class,
            "dangerous_flips": None if self.dangerous_flips is None else [f.model_dump() for f in self.dangerous_flips],
            "skipped": self.skipped, **self.sources,
        }


def attack_to_run(attack: Any, *, seed: int = 0, allow_large_eps: bool = False, **params: Any) -> Any:
    """The attack :func:`attack` runs, built before any model is loaded (a load can take minutes).

    Args:
        attack: a spec (``"pgd:eps=8/255"``), or an Attack (returned as it is).
        seed: the attack's seed unless ``params`` (or the spec) give one. Default 0.
        allow_large_eps: allow a budget above the registry's limit. Default False.
        **params: the attack's parameters, which win over the spec's.

    Returns:
        The Attack.

    Raises:
        ValueError: a misspelt name or a bad parameter.
    """
    if not isinstance(attack, str):
        return attack
    from medrobust.attacks.registry import build_attack

    params = {k: str(v) if not isinstance(v, (int, float)) else v for k, v in params.items()}
    params.setdefault("seed", seed)
    return build_attack(attack, allow_large_eps=allow_large_eps, **params)


def attack(model: Any, images: Any, attack: Any = "sia:eps=8/255", surrogate: Any = None, *, seed: int = 0,
           batch_size: int = 16, limit: int | None = None, split: str | None = None, size: int | None = None,
           class_map: Mapping[str, str] | None = None, normal_class: str | None = None,
           emergency_findings: Sequence[str] = DEFAULT_EMERGENCY_FINDINGS, allow_large_eps: bool = False,
           out: str | Path | None = None, progress: Progress | None = None, contract: ModelContract | None = None,
           surrogate_contract: ModelContract | None = None, per_class: int | None = None, **params: Any) -> AttackResult:
    """Attack ``model`` on labelled ``images``; craft on ``surrogate`` when given (a transfer attack).

    Every batch is attacked as ``mr.evaluate`` attacks it (one
    :class:`~medrobust.execution.units.CraftUnit`): the images are read onto the 8-bit grid
    first, so a 16-bit source is attacked as the evaluation would attack it. The data's classes
    are matched to the model's by name.

    Args:
        model: the target, a path or module (see :func:`mr.load_model`).
        images: labelled images: a data source, a dataset or tensors with labels (see
            :func:`mr.open_images`).
        attack: a spec (``"pgd:eps=8/255,steps=20"``) or an Attack. Default
            ``"sia:eps=8/255"``.
        surrogate: the model the images are crafted on (a path or module), with the same
            classes as the target. Default None: white-box, crafted on the target.
        seed: the attack's seed (unless the spec or ``params`` give one), each batch's (its
            first image's position added) and a generated source's. Default 0.
        batch_size: images per batch. Default 16.
        limit: the most images attacked. Default None: every image.
        split: attack only ``train``, ``val`` or ``test``. Default None: every image.
        size: the side images are resized to. Default None: the target's input size when it is
            square (a volume model's in-plane side when square; its depth is kept), else 64.
        class_map: ``{data class: model class}`` for names that differ. Default None.
        normal_class: the model class meaning "nothing found", for the dangerous flips. Default
            None: found by name (``Normal``, ``No Finding``...).
        emergency_findings: findings whose miss is an emergency. Default ``("pneumothorax",)``.
        allow_large_eps: allow a budget above the registry's limit. Default False.
        out: a folder to write each adversarial image to as a PNG at its relative path (plus
            ``attack.csv`` and ``summary.json``, which names the target, surrogate, data and
            split as given) instead of keeping them in memory; checked before any work. Default
            None.
        progress: reports one stage, named after the attack. Default None: silent.
        contract: the :class:`~medrobust.models.contract.ModelContract` of a target model file
            that is not a medrobust checkpoint. Default None.
        surrogate_contract: likewise for the surrogate. Default None.
        per_class: images per class of a generated source (``phantom``). Default None: the
            source's own default.
        **params: the attack's parameters, overriding the spec's.

    Returns:
        The :class:`AttackResult`: per-image decisions, confidences and perturbation measures,
        the success rates and the dangerous flips, with the images (or the files written).

    Shape:
        - Tensors in: (N, C, H, W) float in [0, 1], labels (N,).
        - ``result.adversarial``: (N, C, H, W) float32 on the 8-bit grid (None with ``out``); CT
          volumes (N, C, D, H, W) on the CT grid.

    Raises:
        ValueError: a bad attack spec or parameter, a surrogate with other classes, unlabelled
            images, classes that do not match, an unusable output folder, or no readable image.

    >>> import torch, medrobust as mr
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 8, 2))
    >>> model = mr.load_model(net, classes=["Normal", "Pneumonia"], network_channels=1)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    >>> result = mr.attack(model, mr.open_images(x, labels=y, classes=model.classes), "pgd:eps=8/255,steps=5")
    >>> tuple(result.adversarial.shape), bool((result.adversarial - x).abs().max() <= 8 / 255 + 1 / 510)
    ((4, 1, 8, 8), True)
    """
    from medrobust.execution.pixels import from_stored, to_stored
    from medrobust.execution.units import CraftUnit, ModelRef, Workbench

    atk = attack_to_run(attack, seed=seed, allow_large_eps=allow_large_eps, **params)  # before any model is loaded
    target = load_model(model, contract)
    crafter = load_model(surrogate, surrogate_contract) if surrogate is not None else target
    if list(crafter.classes) != list(target.classes):
        raise ValueError(f"{surrogate}: surrogate classes {crafter.classes} differ from the target's {target.classes}")
    fixed = read_side(target.input_size)
    data = open_images(images, size=size or fixed or 64, split=split, seed=seed,
                       **({"per_class": per_class} if per_class is not None else {}))
    if isinstance(attack, str) and data.grid.levels != 255:  # CT: rounded to integer HU, as a run rounds it
        from medrobust.execution.units import params_on_grid
        from medrobust.specs.components import parse_spec

        name, spec_params = parse_spec(attack, "attack")
        atk = attack_to_run(name, seed=seed, allow_large_eps=allow_large_eps,
                            **params_on_grid(name, {**spec_params, **params}, data.grid))
    if getattr(atk, "eps", None) is not None:
        from medrobust.evaluation.budget_units import refuse_hu_budget

        refuse_hu_budget(f"attack {atk.name}", float(atk.eps), data.grid, data.source or "the images")
    if not data.labelled:
        raise ValueError(f"{data.source}: an attack needs each image's true class: lay the images out as "
                         "<Class>/<image>.png, or pass labels")
    label_map = match_classes(data.classes, target.classes, dict(class_map or {}))
    normal = find_normal_class(target.classes, normal_class)
    emergency = find_classes(list(emergency_findings), target.classes)
    if out is not None:
        from medrobust.evaluation.run_dir import check_output_folder

        check_output_folder(Path(out))  # before any work: a long attack must not end by failing to write
    names = OutputNames(Path(out)) if out is not None else None
    sources = data.paths() if out is not None else None

    ids: list[str] = []
    files: list[str] = []
    y_all, clean_all, adv_all, conf_clean, conf_adv, kept = [], [], [], [], [], []
    measures: dict[str, list[np.ndarray]] = {k: [] for k in PERTURBATION_MEASURES}
    n_total = min(len(data), limit) if limit else len(data)
    start = time.perf_counter()
    done = 0
    bench = Workbench({"model": target, "surrogate": crafter}, target.device)
    with (progress or SilentProgress()).stage(str(atk.name), n_total) as bar:
        for x, y, batch_ids in data.batches(batch_size, limit):
            y = label_map[y.numpy()]
            x = data.grid.round(x)  # the stored grid, as evaluate reads its images
            crafted = bench.execute(CraftUnit(seed=seed, start=done, attack=atk, crafter=ModelRef(
                "surrogate" if surrogate is not None else "model"), target=ModelRef("model"), clean=to_stored(x, data.grid),
                labels=y, confidence=True))
            x_adv = from_stored(crafted["x_adv"])
            clean = model_outputs(target, x)
            conf_clean.append(clean.confidence.numpy())
            conf_adv.append(crafted["confidence"])
            for key in PERTURBATION_MEASURES:
                measures[key].append(np.asarray(crafted[key], dtype=np.float64))
            if names is not None:
                files += write_images(names, batch_ids, x_adv, sources)
            else:
                kept.append(x_adv)
            ids += batch_ids
            y_all.append(y)
            clean_all.append(clean.labels.numpy())
            adv_all.append(crafted["pred"])
            done += len(batch_ids)
            bar.advance(len(batch_ids))
    if not ids:
        raise ValueError(f"{data.source}: no readable images to attack" +
                         (f" ({len(data.skipped)} skipped: {data.skipped[0]})" if data.skipped else ""))
    y_cat, clean_cat, adv_cat = np.concatenate(y_all), np.concatenate(clean_all), np.concatenate(adv_all)
    result = AttackResult(
        attack=atk.describe(), classes=list(target.classes), ids=ids, labels=y_cat, pred_clean=clean_cat,
        pred_adv=adv_cat, confidence_clean=np.concatenate(conf_clean), confidence_adv=np.concatenate(conf_adv),
        perturbation={k: np.concatenate(v) for k, v in measures.items()},
        success=attack_success(y_cat, clean_cat, adv_cat),
        dangerous_flips=dangerous_flips(y_cat, clean_cat, adv_cat, target.classes, normal, emergency),
        normal_class=target.classes[normal] if normal is not None else None,
        seconds=time.perf_counter() - start, adversarial=torch.cat(kept) if kept else None,
        files=files if names is not None else None, skipped=data.skipped, grid=data.grid,
        sources={"target": _named(model), "surrogate": _named(surrogate) if surrogate is not None else None,
                 "data": _named(images), "split": split})
    if out is not None:
        _write_tables(Path(out), result)
    return result


def _named(thing: Any) -> str:
    """A path as given, else what the object is (a model or images held in memory)."""
    return str(thing) if isinstance(thing, (str, os.PathLike)) else f"(in memory) {type(thing).__name__}"


def _write_tables(out: Path, result: AttackResult) -> None:
    from medrobust.evaluation.run_dir import atomic_write_text

    rows = result.rows()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "attack.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out / "summary.json", json.dumps(result.summary(), indent=2, default=str, allow_nan=False) + "\n")
