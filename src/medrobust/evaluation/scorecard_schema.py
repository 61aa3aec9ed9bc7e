"""``RUN/scorecard.json``'s schema (versioned by :data:`SCHEMA_VERSION`) and its file: the rows,
their budget points and detector figures, as :mod:`medrobust.evaluation.scorecard` builds them,
and the requirements traced to them (:mod:`medrobust.evaluation.evidence`).

Versions: 1, the rows, the certificate and the definitions; 2 adds ``evidence``. A version-1 file
still reads (its ``evidence`` empty); ``medrobust report`` rewrites it from metrics.json. The JSON
schema of the current version is published as ``docs/scorecard.schema.json``
(:func:`scorecard_json_schema`; ``python -m medrobust.evaluation.scorecard_schema`` prints it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 2
SCORECARD_FILE = "scorecard.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BudgetPoint(_Model):
    eps: float  # in [0, 1] image units
    grey_levels: float  # eps x 255
    accuracy: float
    interval: list[float] | None  # 95% Wilson interval of the accuracy
    attack: str  # the attack key that reached this accuracy
    units: str = "grey levels"  # the data's budget unit: grey levels (8-bit) or HU (CT)
    value: float | None = None  # eps in ``units``: grey levels (= grey_levels) or HU (eps x 4095); None: an older file


class DetectorRate(_Model):
    detector: str
    attack: str
    detection_rate: float
    false_alarm_rate: float  # the worst over the clean images and every benign change (re-encoding, resizing, ...)
    false_alarms_on: str = "clean images"  # where that worst false-alarm rate was measured
    roc_auc: float | None = None  # clean vs attacked (0.5: chance)
    calibration: str
    note: str | None = None  # e.g. "no better than chance" (ROC-AUC at or below 0.5, or flags no more attacks than alarms)


class ThreatRow(_Model):
    threat_model: str  # white-box | transfer | query | non-adaptive | adaptive | guarded | guarded-transfer
    label: str
    attacks: list[str]
    n_images: int
    clean_accuracy: float
    clean_interval: list[float] | None
    points: list[BudgetPoint]
    main_eps: float
    half_accuracy_budget: float | None  # grey levels (eps x 255, whatever the data); None: never reached
    half_accuracy_text: str
    dangerous_flip_rate: float | None
    dangerous_flips_text: str
    detection: list[DetectorRate] = Field(default_factory=list)
    score: float | None
    score_text: str
    warning: str | None = None  # e.g. possible gradient masking (an adaptive row whose figure may be optimistic)
    score_low: float | None = None  # the score's bounds from monotonicity (accuracy never rises with the budget)
    score_high: float | None = None
    measured_at: list[float] = Field(default_factory=list)  # the budgets (up to 8/255) its attacker ran at
    clean_abstention_rate: float | None = None  # a guarded row: clean images the guard gives no label for
    evasion_by_budget: dict[str, float] | None = None  # a guarded row: budget ("8/255") -> evasion rate


class CertifiedRadius(_Model):
    radius: float  # L2, in [0, 1] image units
    grey_levels_per_pixel: float  # the same L2 norm spread evenly over every pixel, in grey levels
    accuracy: float  # certified accuracy at this radius
    interval: list[float] | None  # 95% Wilson interval


class CertifiedEntry(_Model):
    """The certificate (randomized smoothing, Cohen et al. 2019): a guarantee kept apart from the
    empirical rows and never part of ``overall``; it holds for the smoothed classifier (noise and
    a majority vote of the base model), not for the base model answering once."""

    label: str  # "certified (L2, randomized smoothing)"
    holds_for: str  # what the guarantee is about
    n_images: int
    sigma: float  # the noise's standard deviation, [0, 1] image units
    n0: int
    draws: int
    alpha: float
    points: list[CertifiedRadius]
    largest_radius: float | None = None  # sigma x Phi^-1(alpha^(1/draws)): no radius beyond it with these draws
    abstention_rate: float
    smoothed_clean_accuracy: float
    base_clean_accuracy: float
    note: str | None = None  # e.g. the model was not trained under the certificate's noise


class Evidence(_Model):
    """One requirement traced to this run (:mod:`medrobust.evaluation.evidence`): never a verdict
    of compliance, only what the run holds for it."""

    requirement: str  # e.g. "EU AI Act Art. 15(5)"
    source: str  # the document and its reference
    summary: str  # what it asks, in a sentence or two of our own
    rows: list[str]  # the evidence in this run: row labels, the certificate's label, named figures of metrics.json
    status: Literal["addressed", "partly", "not_addressed"]  # decided by the requirement's rule from what the run holds
    gaps: list[str]  # what is not addressed, in words


class Scorecard(_Model):
    schema_version: int = SCHEMA_VERSION
    run: str
    title: str | None = None  # the run's title (config ``title``), when it was given one
    created: str
    medrobust_version: str
    seed: int | None
    model: dict
    data: dict
    rows: list[ThreatRow]
    not_tested: list[str]
    overall: float | None
    grid: list[float] = Field(default_factory=list)  # the budgets up to 8/255 every scored row was measured at
    overall_text: str
    definitions: dict[str, str]
    certified: CertifiedEntry | None = None  # None: no certificate computed (a guarantee, never in ``overall``)
    evidence: list[Evidence] = Field(default_factory=list)  # empty in a version-1 file

    def row(self, threat_model: str, label: str | None = None) -> ThreatRow:
        for r in self.rows:
            if r.threat_model == threat_model and (label is None or r.label == label):
                return r
        raise KeyError(f"no {threat_model} row{f' {label!r}' if label else ''}; have {[r.label for r in self.rows]}")


def scorecard_json_schema() -> dict:
    """The JSON schema (draft 2020-12) of the current scorecard.json, from the pydantic model; the
    published copy is ``docs/scorecard.schema.json``."""
    schema = Scorecard.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"medrobust-scorecard-{SCHEMA_VERSION}", **schema}


def write_scorecard(scorecard: Scorecard, run_dir: str | Path) -> Path:
    """``RUN/scorecard.json`` (strict JSON, atomic)."""
    from medrobust.evaluation.run_dir import atomic_write_text, strict_json

    path = Path(run_dir) / SCORECARD_FILE
    atomic_write_text(path, strict_json(scorecard.model_dump(mode="json"), what=str(path)))
    return path


def read_scorecard(run_dir: str | Path) -> Scorecard:
    """``RUN/scorecard.json``, read back; FileNotFoundError naming the command that writes it."""
    path = Path(run_dir) / SCORECARD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no scorecard.json; run `medrobust report {Path(run_dir)}` to write it")
    return Scorecard.model_validate(json.loads(path.read_text()))


if __name__ == "__main__":  # python -m medrobust.evaluation.scorecard_schema > docs/scorecard.schema.json
    import sys

    sys.stdout.write(json.dumps(scorecard_json_schema(), indent=2) + "\n")
