"""The baseline stage: the model's decision on every test image, streamed batch by batch
(stage ``baseline``), then the attack subset — a stratified share of the test images whose clean
8-bit images are read once into stage ``inputs`` for every later stage.

Unreadable files are skipped and listed. An image whose model output is not finite is never a
prediction: it is listed as not tested and left out of every figure; a model whose output is not
finite for most images stops the run with one line naming it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from medrobust.data.class_names import NO_ANSWER
from medrobust.evaluation.classification import classification_report
from medrobust.evaluation.context import RunSetup
from medrobust.evaluation.results import ClassificationReport
from medrobust.evaluation.run_data import read_images
from medrobust.execution.resumable_stage import DRIVER, StageResult, run_stage
from medrobust.execution.units import PredictUnit

NON_FINITE_EARLY_STOP = 32
"""Images after which a model whose outputs are mostly not finite stops the run (or all, if fewer)."""
PER_IMAGE = ("pred", "label", "ids", "position")


@dataclass(frozen=True)
class Baseline:
    """Every tested image's label and decision (``label``, ``pred``, ``ids``, ``position``: its
    index in the test split), the classification report and the seconds per image."""

    summary: dict[str, np.ndarray]
    report: ClassificationReport
    seconds_per_image: float

    @property
    def labels(self) -> np.ndarray:
        return self.summary["label"]

    @property
    def pred(self) -> np.ndarray:
        return self.summary["pred"]


def run(setup: RunSetup) -> Baseline:
    """The model's decisions on every test image, streamed batch by batch into stage ``baseline``
    (see the module docstring).

    Args:
        setup: the run before its attack subset is chosen.

    Returns:
        The :class:`Baseline`: each tested image's label, decision, id and position in the test
        split, the classification report and the seconds per image.

    Raises:
        ValueError: no readable test image, or a model whose output is not finite for most
            images.
    """
    t0 = time.perf_counter()
    test = setup.parts["test"]
    read: dict[int, dict[str, np.ndarray]] = {}
    seen = {"answered": 0, "broken": 0}

    def unit(b: int, sl: slice) -> PredictUnit:
        images, labels, ids, kept = read_images(test, range(sl.start, sl.stop), setup.plan.label_map, setup.skipped)
        read[b] = {"label": labels.astype(np.int64), "ids": np.array(ids, dtype=str),
                   "position": np.array(kept, dtype=np.int64)}
        return PredictUnit(seed=setup.seed, start=sl.start, images=images)

    def finish(b: int, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        broken = int((arrays["pred"] == NO_ANSWER).sum())
        seen["broken"] += broken
        seen["answered"] += len(arrays["pred"]) - broken
        if seen["answered"] + seen["broken"] >= min(len(test), NON_FINITE_EARLY_STOP):
            _check_finite_outputs(setup, seen["broken"], seen["answered"] + seen["broken"])
        return {**arrays, **read.pop(b)}

    with setup.progress.stage("baseline", len(test)) as bar:
        stage = run_stage(setup.engine, setup.stages / "baseline", len(test), setup.batch_size, unit, bar.advance,
                          frozenset(PER_IMAGE), finish)
    summary = stage.summary
    if not len(summary.get("pred", [])):
        raise ValueError(f"{setup.config.data.source}: no readable test images among {len(test)} "
                         f"({len(setup.skipped.lines)} skipped)")
    for i in sorted(set(range(len(test))) - set(summary["position"].tolist())):  # skipped in an earlier, resumed run
        record = test.records[i]
        if not setup.skipped.mentions(str(record.path or record.id)):
            setup.skipped.add(f"{record.path or record.id}: unreadable (skipped in an earlier part of this run)")
    broken = summary["pred"] == NO_ANSWER
    _check_finite_outputs(setup, int(broken.sum()), len(broken))
    for name in summary["ids"][broken]:
        setup.skipped.add(f"{name}: not tested: the model's output for this image is not finite (NaN or infinite)")
    summary = {k: v[~broken] if k in PER_IMAGE else v for k, v in summary.items()}
    return Baseline(summary=summary, report=classification_report(summary["label"], summary["pred"], setup.classes),
                    seconds_per_image=(time.perf_counter() - t0) / max(1, len(summary["label"])))


def _check_finite_outputs(setup: RunSetup, broken: int, seen: int) -> None:
    """Stop the run when the model's output is not finite for most images: it cannot be evaluated."""
    if broken * 2 > seen:
        load = setup.config.model.load
        who = load.path if load is not None else "the model"
        raise ValueError(f"{who}: its output is not a finite number (NaN or infinite) for {broken} of the first "
                         f"{seen} test images, so it cannot be evaluated; check the model on a known image "
                         "(its weights, its input size and intensity)")


def stratified_subset(y: np.ndarray, n: int) -> np.ndarray:
    """Indices of up to ``n`` items taking classes in turn (in their original order)."""
    per_class = [list(np.flatnonzero(y == k)) for k in np.unique(y)]
    out: list[int] = []
    while len(out) < n and any(per_class):
        for items in per_class:
            if items and len(out) < n:
                out.append(items.pop(0))
    return np.array(sorted(out), dtype=np.int64)


def attack_subset(setup: RunSetup, baseline: Baseline) -> tuple[StageResult, np.ndarray]:
    """The attack subset: ``attack_images`` tested images, classes in turn.

    Args:
        setup: the run before its attack subset is chosen.
        baseline: the baseline stage's outcome (which images were tested, and the decisions).

    Returns:
        ``(inputs, clean_pred)``: stage ``inputs``, the subset's clean images read once from the
        data (8-bit, key ``clean``, with ``labels`` and ``ids``), and the model's decisions on
        them from the baseline.

    Raises:
        ValueError: a test image became unreadable during the run.
    """
    idx = stratified_subset(baseline.labels, setup.config.attack_images)
    positions = baseline.summary["position"][idx]
    test = setup.parts["test"]

    def unit(b: int, sl: slice) -> dict[str, np.ndarray]:
        images, labels, ids, kept = read_images(test, positions[sl].tolist(), setup.plan.label_map, setup.skipped)
        if len(kept) != sl.stop - sl.start:
            raise ValueError(f"{setup.config.data.source}: a test image became unreadable during the run; "
                             "run again to resume")
        return {"clean": images, "labels": labels.astype(np.int64), "ids": np.array(ids, dtype=str)}

    inputs = run_stage(DRIVER, setup.stages / "inputs", len(positions), setup.batch_size, unit,
                       required=frozenset({"clean", "labels", "ids"}))
    return inputs, baseline.pred[idx]
