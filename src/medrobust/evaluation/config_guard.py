"""The ``guard:`` section of an experiment configuration: which guard the run's ``guard`` stage
evaluates (:mod:`medrobust.evaluation.stages.guard`) and how hard its attacker tries.

The guard is the one ``mr.guard.from_run`` serves: one of the run's defenses in front of the
model, the run's reference-free detectors with the thresholds the detection stage calibrated,
and a decision on a flag (abstain or warn)::

    guard: {defense: "jpeg:quality=75+tv", detectors: [squeeze], on_flag: abstain,
            lambdas: [0, 1, 10], steps: 20}

Checked against the rest of the configuration before any work
(:func:`check_guard_section`): the defense must be one the run evaluates, each detector one the
run calibrates and reference-free (in production there is no original image), and a guard needs
a defense or a detector.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from medrobust.evaluation.config_sections import DetectorsConfig, _Section

REFERENCE_FREE_DETECTORS = ("squeeze",)
"""The run's detectors a guard can use: those that need no original image."""

GRADIENT_ROUTES = ("unrolled", "smooth", "bpda", "auto")
"""How the guard-aware attacker differentiates through the defense (the adaptive members' routes)."""


class GuardSection(_Section):
    """The guard the run evaluates against an attacker who knows it (module docstring).

    Args:
        enabled: run the stage. Default True.
        defense: the spec of one of the run's ``defenses``. Default None: the first; none when
            the run has no defense.
        detectors: the run's reference-free detectors the guard consults. Default None: every
            one the run configures (``squeeze``).
        fpr: the false positive rate the detectors' thresholds aim at. Default None: the
            detection section's ``target_fpr`` (its thresholds are the guard's); another value
            calibrates on the same images, folds and rule at that rate.
        on_flag: ``abstain`` (the default) or ``warn``.
        lambdas: the detectors' weights in the attacker's loss; 0 is the attacker who ignores
            them. Default [0, 1, 10].
        steps: PGD steps of each guard-aware run. Default 20.
        margin: how far below each threshold the attacker aims, as a fraction of it. Default 0.1.
        gradient: the route through the defense: ``unrolled`` (the default: exact where the
            defense has gradients, BPDA elsewhere), ``smooth``, ``bpda`` or ``auto``.
        eot_samples: EOT draws for a randomised defense. Default None: the defense's default.
    """

    enabled: bool = True
    defense: str | None = None
    detectors: list[str] | None = None
    fpr: float | None = Field(None, gt=0, lt=1)
    on_flag: Literal["abstain", "warn"] = "abstain"
    lambdas: list[float] = Field(default_factory=lambda: [0.0, 1.0, 10.0])
    steps: int = Field(20, ge=1, le=1000)
    margin: float = Field(0.1, ge=0, lt=1)
    gradient: Literal["unrolled", "smooth", "bpda", "auto"] = "unrolled"
    eot_samples: int | None = Field(None, ge=1)

    @field_validator("lambdas")
    @classmethod
    def _lambdas(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("lambdas is empty; give at least one weight, e.g. [0, 1, 10] (0: ignore the detectors)")
        if any(v < 0 for v in value):
            raise ValueError(f"lambdas {value}: each weight must be >= 0")
        if len(set(value)) != len(value):
            raise ValueError(f"lambdas {value} lists a weight twice")
        return [float(v) for v in value]


def check_guard_section(guard: GuardSection, defenses: list[str], detectors: DetectorsConfig) -> None:
    """Refuse a guard the run cannot evaluate (module docstring); ValueError naming the field."""
    if guard.defense is not None and guard.defense not in defenses:
        raise ValueError(f"guard.defense {guard.defense!r} is not one of the run's defenses "
                         f"({', '.join(defenses) or 'none'}); name one of them, or add it to defenses")
    for name in guard.detectors or []:
        if name == "reference":
            raise ValueError("guard.detectors lists 'reference': the study's detector compares each image with its "
                             "original, and a guard in production has none; use 'squeeze'")
        if name not in REFERENCE_FREE_DETECTORS:
            raise ValueError(f"guard.detectors lists {name!r}; the guard can use {', '.join(REFERENCE_FREE_DETECTORS)}")
        if not getattr(detectors, f"runs_{name}"):
            raise ValueError(f"guard.detectors lists {name!r} but detectors.{name} is not configured (or disabled): "
                             f"the guard uses the thresholds the detection stage calibrates; add detectors: {{{name}: {{}}}}")
    if not defenses and not guard_detectors(guard, detectors):
        raise ValueError("guard: no defense and no detector, so there is no guard to evaluate; add a defense or "
                         "detectors: {squeeze: {}}, or set guard.enabled: false")


def guard_defense(guard: GuardSection, defenses: list[str]) -> str | None:
    """The guard's defense spec: the one named, else the run's first, else None."""
    return guard.defense if guard.defense is not None else (defenses[0] if defenses else None)


def guard_detectors(guard: GuardSection, detectors: DetectorsConfig) -> list[str]:
    """The guard's detectors: those named, else the run's reference-free ones."""
    if guard.detectors is not None:
        return list(guard.detectors)
    return [name for name in REFERENCE_FREE_DETECTORS if getattr(detectors, f"runs_{name}")]


def describe_guard(guard: GuardSection, defenses: list[str], detectors: DetectorsConfig) -> dict[str, Any]:
    """The guard's resolved settings (what the stage's files are keyed on)."""
    return {"defense": guard_defense(guard, defenses), "detectors": guard_detectors(guard, detectors),
            "fpr": guard.fpr, "on_flag": guard.on_flag, "lambdas": list(guard.lambdas), "steps": guard.steps,
            "margin": guard.margin, "gradient": guard.gradient, "eot_samples": guard.eot_samples}
