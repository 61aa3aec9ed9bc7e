"""What the report reads from a run directory, and how it picks the parts a figure shows.

The report is a pure function of the run directory: ``metrics.json`` (the result types of
:mod:`medrobust.evaluation.results`), ``samples/examples.npz`` (:mod:`medrobust.evaluation.samples`)
and the training histories in ``model/model.json`` and ``surrogates/<name>/model.json``. No model
is loaded or run here. Every optional part may be absent; the accessors then return ``None``
or an empty collection, and the report says so instead of failing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medrobust.evaluation.classification import decision_name
from medrobust.evaluation.results import AttackOutcome, DefenseOutcome, RunMetrics, read_metrics
from medrobust.evaluation.samples import load_samples, sample_name

log = logging.getLogger(__name__)

HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
"""The keys a training-history record needs for the learning curves."""


def budget_unit(metrics: RunMetrics) -> str:
    """The unit the run's budgets are stated in: ``"HU"`` for CT data, else ``"grey levels"`` (8-bit
    data, and runs that predate the record of the stored grid)."""
    return "HU" if (metrics.data.get("grid") or {}).get("unit") == "HU" else "grey levels"


def noise_how(method: str) -> str:
    """How metrics.json's noise figure was measured, as a clause: ``estimated``, ``measured on the
    phantoms as generated`` (CT phantoms made in the run) or ``from the phantoms' manifest``."""
    if method.startswith("estimate"):
        return "estimated"
    return "measured on the phantoms as generated" if method.startswith("the phantoms' generator") \
        else "from the phantoms' manifest"


def noise_text(metrics: RunMetrics) -> str | None:
    """The data's measured noise as a clause (``the image noise of 6.1 HU (standard deviation in a
    homogeneous region, from the phantoms' manifest)``), or None when it was not measured."""
    noise = metrics.data.get("noise") or {}
    if noise.get("std") is None:
        return None
    how = noise_how(str(noise.get("method", "")))
    return (f"the image noise of {noise['std']:g} {noise.get('unit', '')} (standard deviation in a homogeneous "
            f"region, {how})")


def format_eps(eps: float, unit: str = "grey levels") -> str:
    """An L-inf budget as grey levels of 255 when it is one (``8/255``), else as a number; in HU
    (``4 HU``) when ``unit`` is ``"HU"`` (CT data)."""
    if unit == "HU":
        from medrobust.specs.components import eps_text

        return eps_text(eps, unit)
    levels = eps * 255
    if abs(levels - round(levels)) < 1e-3:
        return f"{round(levels)}/255"
    return f"{eps:.4g}"


def pct(fraction: float | None) -> str:
    """A fraction in [0, 1] as a percentage with one decimal (``0.8125`` -> ``81.2%``); an
    undefined value (None) as ``n/a``, never as a number."""
    return "n/a" if fraction is None else f"{100 * fraction:.1f}%"


def percent_or_nan(fraction: float | None) -> float:
    """A fraction as a percentage for a figure; undefined values become NaN (matplotlib leaves a gap)."""
    return float("nan") if fraction is None else 100.0 * fraction


def visible_budget(eps: float) -> bool:
    """Whether an L-inf budget is above 16/255, where a reader may see the perturbation."""
    return eps > 16 / 255 + 1e-9


def read_history(model_json: Path) -> list[dict[str, float]]:
    """The per-epoch records of a checkpoint's ``model.json`` (``history``, or ``training.history``);
    empty when the file, the key or a usable record is missing (e.g. a model loaded, not trained)."""
    if not model_json.is_file():
        return []
    try:
        meta = json.loads(model_json.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s: unreadable (%s); no learning curves", model_json, err)
        return []
    history = meta.get("history")
    if history is None and isinstance(meta.get("training"), dict):
        history = meta["training"].get("history")
    if not isinstance(history, list):
        return []
    return [r for r in history if isinstance(r, dict) and all(isinstance(r.get(k), (int, float)) for k in HISTORY_KEYS)]


@dataclass
class RunContents:
    """Everything the report uses, read once from the run directory."""

    run_dir: Path
    metrics: RunMetrics
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    surrogate_histories: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    @classmethod
    def read(cls, run_dir: str | Path) -> RunContents:
        run_dir = Path(run_dir)
        metrics = read_metrics(run_dir)
        try:
            samples = load_samples(run_dir)
        except (OSError, ValueError) as err:
            log.warning("%s: example images unreadable (%s); picture figures skipped", run_dir / "samples", err)
            samples = {}
        surrogates: dict[str, list[dict[str, float]]] = {}
        surrogate_root = run_dir / "surrogates"
        if surrogate_root.is_dir():
            for folder in sorted(p for p in surrogate_root.iterdir() if p.is_dir()):
                surrogates[folder.name] = read_history(folder / "model.json")
        return cls(run_dir, metrics, samples, read_history(run_dir / "model" / "model.json"), surrogates)

    # --- which parts a figure shows
    @property
    def classes(self) -> list[str]:
        return list(self.metrics.baseline.classes)

    def main_attack(self) -> AttackOutcome | None:
        """The attack the study-style figures show: a white-box SIA, else any SIA, else the first."""
        attacks = self.metrics.attacks
        for wanted in (lambda a: a.attack == "sia" and a.source == "white-box", lambda a: a.attack == "sia"):
            for attack in attacks:
                if wanted(attack):
                    return attack
        return attacks[0] if attacks else None

    def main_defense(self) -> DefenseOutcome | None:
        """The defense the study-style figures show: the one that wins back most on the main attack."""
        defenses = self.metrics.defenses
        if not defenses:
            return None
        attack = self.main_attack()
        if attack is None:
            return defenses[0]
        return max(defenses, key=lambda d: d.non_adaptive_recovery_pp.get(attack.key, float("-inf")))

    # --- example images
    def n_samples(self) -> int:
        original = self.samples.get("original")
        return 0 if original is None else int(len(original))

    def sample(self, prefix: str, *names: str) -> np.ndarray | None:
        """``samples[prefix__name1__name2]`` with each name as the examples write it, or ``None``."""
        key = "__".join([prefix, *(sample_name(self.samples, n) for n in names)])
        value = self.samples.get(key)
        if value is None or self.n_samples() == 0 or len(value) != self.n_samples():
            return None
        return value

    def label_name(self, index: int) -> str:
        classes = self.samples.get("classes")
        names = [str(c) for c in classes] if classes is not None else self.classes
        return decision_name(names, index)

    def true_label(self, i: int) -> str:
        labels = self.samples.get("labels")
        return self.label_name(int(labels[i])) if labels is not None and i < len(labels) else "?"

    def predicted(self, key: str, i: int) -> str:
        """The predicted class name stored as ``pred__<key>`` for example ``i`` ("?" if absent)."""
        predictions = self.samples.get(f"pred__{key}")
        return self.label_name(int(predictions[i])) if predictions is not None and i < len(predictions) else "?"

    def sample_id(self, i: int) -> str:
        ids = self.samples.get("ids")
        return str(ids[i]) if ids is not None and i < len(ids) else f"#{i}"

    def attack_sample_key(self, attack: AttackOutcome) -> str:
        return "__".join(["adv", sample_name(self.samples, attack.key)])

    def defense_sample_key(self, defense: DefenseOutcome, image_set: str) -> str:
        return "__".join(["def", sample_name(self.samples, defense.name), sample_name(self.samples, image_set)])
