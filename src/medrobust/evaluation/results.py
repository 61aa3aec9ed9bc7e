"""The result types of an evaluation run: what ``metrics.json`` holds.

The runner writes these, the report reads them; nothing else couples the two. Every number
carries the settings that produced it (attack parameters, epsilon, defense spec, number of
images). Rates are fractions in [0, 1]; accuracy drops and recoveries are in percentage
points (pp) where the field name says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

METRICS_FILE = "metrics.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassMetrics(_Model):
    """One class's metrics; ``None`` where undefined (e.g. recall of a class with no images),
    never a made-up 0."""

    precision: float | None
    recall: float | None  # sensitivity
    specificity: float | None
    f1: float | None
    support: int


class ClassificationReport(_Model):
    """Accuracy, per-class metrics and the confusion matrix (rows: true, columns: predicted)."""

    n: int
    accuracy: float
    classes: list[str]
    confusion_matrix: list[list[int]]
    per_class: dict[str, ClassMetrics]
    no_answer: int = 0  # images whose model output was not finite (no class; counted wrong, in no column)


class DangerousFlip(_Model):
    """Images with a finding that the attack made the model call normal (a missed finding)."""

    true_class: str
    predicted_class: str  # the normal class
    count: int
    rate: float | None  # among images of ``true_class`` that were correct before the attack (None: none were)
    emergency: bool = False  # true_class is one of the configured emergency findings
    n_correct: int | None = None  # images of ``true_class`` correct before the attack (rate's denominator)


class Perturbation(_Model):
    linf_mean: float
    linf_max: float
    l2_mean: float
    ssim_mean: float
    psnr_mean_db: float | None  # None: every image unchanged (infinite PSNR)


class AttackOutcome(_Model):
    """One attack (one epsilon, one source) against the model, on the attack subset."""

    key: str  # its label, e.g. "sia@8/255" or "sia@8/255 from resnet18"
    attack: str
    eps: float
    params: dict[str, Any]
    source: str  # "white-box", or the name of the surrogate the images were crafted on (a transfer attack)
    clean: ClassificationReport
    adversarial: ClassificationReport
    success_rate_all: float
    success_rate_correct: float | None  # None: no image was classified correctly before the attack
    n_correct_before: int = 0
    accuracy_drop_pp: dict[str, float | None]  # per class, clean minus adversarial recall, in points
    dangerous_flips: list[DangerousFlip] | None  # None: not assessed (no class identified as normal)
    perturbation: Perturbation
    seconds_per_image: float
    broken_by: dict[str, int] | None = None  # an ensemble (autoattack): images each member broke ("clean": wrong before)


class SweepPoint(_Model):
    eps: float
    accuracy: float


class TransferMatrix(_Model):
    attack: str
    sources: list[str]  # surrogate names (rows)
    targets: list[str]  # model names (columns)
    success_rate: list[list[float]]
    success_rate_correct: list[list[float | None]]  # None: the target had no image right


class AdaptiveMember(_Model):
    """One member of the adaptive portfolio (:mod:`medrobust.evaluation.adaptive_portfolio`)
    against one defense: what ran, and the defended model's accuracy under it alone (an image
    counts as right when the model is right on every run's images of this member)."""

    name: str  # unrolled | smooth | bpda | square | transfer
    description: str  # what ran, e.g. "pgd@8/255, 20 steps, 2 restarts; exact gradients through tv, BPDA through jpeg"
    gradient_based: bool
    accuracy: float | None  # None: not run (``not_run`` says why)
    runs: list[str] = Field(default_factory=list)  # the stage keys whose images count
    not_run: str | None = None
    seconds_per_image: float = 0.0


class ConvergenceCheck(_Model):
    """A doubling check of the adaptive attacker's effort: ``quantity`` (steps or EOT draws)
    doubled until the last doubling changed accuracy by at most ``tolerance``."""

    quantity: str
    values: list[int]
    accuracies: list[float]
    tolerance: float  # fraction of the images (steps: one image; EOT draws: the test set's noise)
    converged: bool
    text: str


class DefenseOutcome(_Model):
    """A preprocessing defense: its cost on clean images and what it wins back.

    ``adaptive_accuracy`` is the worst case over the adaptive portfolio (``adaptive_members``):
    an image counts only when the defended model is right on it clean and under every member."""

    name: str  # the spec, e.g. "jpeg:quality=75+tv:weight=0.1"
    clean: ClassificationReport
    clean_cost_pp: float  # undefended minus defended clean accuracy, in points
    non_adaptive: dict[str, float]  # attack key -> accuracy of the defended model on that attack's images
    non_adaptive_eps: dict[str, float] = Field(default_factory=dict)  # attack key -> its budget (sweeps included)
    non_adaptive_recovery_pp: dict[str, float]  # attack key -> defended minus undefended accuracy, points
    non_adaptive_reports: dict[str, ClassificationReport] = Field(default_factory=dict)  # attack key -> report
    adaptive_attack: str  # what the figure is over, e.g. "worst case of 2 adaptive attacks at 8/255 (unrolled, transfer)"
    adaptive_accuracy: float
    adaptive_recovery_pp: float  # vs the same attack without the defense
    gradient_mode: str  # how the adaptive attacker went through the defense, e.g. "unrolled+eot(20), smooth, queries, transfer"
    seconds_per_image: float
    adaptive_eps: float | None = None
    adaptive_sweep: list[SweepPoint] = Field(default_factory=list)  # the worst case at each budget of the grid
    adaptive_members: list[AdaptiveMember] = Field(default_factory=list)
    adaptive_checks: list[ConvergenceCheck] = Field(default_factory=list)
    masking_eps: float | None = None  # the large budget of the masking check
    masking_eps_accuracy: float | None = None  # the first gradient member's accuracy there (None: not run)
    gradient_masking: list[str] = Field(default_factory=list)  # reasons; empty: no sign seen
    gradient_masking_assessed: bool = True  # False: no gradient member ran (a black-box model)

    @property
    def masking_flagged(self) -> bool:
        """Whether the gradient-masking warning belongs beside ``adaptive_accuracy``: signs were seen
        and the figure is above 0%. At 0% no attacker does better, so "may be optimistic" would
        mislead; the signs are still listed (``evaluation_checks.MASKING_MOOT``)."""
        return bool(self.gradient_masking) and self.adaptive_accuracy > 0.0


class DetectorOutcome(_Model):
    """A detector's detection rates, false positive rates and ROC."""

    name: str
    threshold: dict[str, float]
    detection_rate: dict[str, float]  # attack key -> fraction of attacked images flagged
    fpr_clean: float
    fpr_benign: dict[str, float]  # benign change -> fraction flagged
    roc_auc: dict[str, float]  # attack key -> ROC-AUC (clean vs attacked)
    roc: dict[str, dict[str, list[float]]]  # attack key -> {"fpr": [...], "tpr": [...]}
    reasons: dict[str, dict[str, int]]  # attack key -> reason -> count
    latency_ms_per_image: float
    log_lines: list[str] = Field(default_factory=list)  # study-style per-image lines (a sample)
    calibration: str = ""  # how the threshold was set, e.g. "5-fold cross-fitting over 90 clean test images"


class ModelChecks(_Model):
    """The checks of the model that say when a white-box figure may be optimistic
    (:mod:`medrobust.evaluation.evaluation_checks`): run on ``n_images`` clean images of the
    attack subset before the attacks, and after them (``query_beats_gradients``)."""

    n_images: int
    randomised: bool  # two forward passes on the same images differ
    eot_samples: int  # the draws each gradient of a white-box attack averages over (1: none)
    probabilities: str | None  # "softmax" when the model returns probabilities (its logits recovered), else None
    zero_gradient_images: int | None  # images whose loss gradient is exactly zero (None: a black box, not assessed)
    query_beats_gradients: dict[str, int] = Field(default_factory=dict)  # budget -> images only a query attack broke
    flags: list[str] = Field(default_factory=list)  # the sentences, one per sign seen


class RobustBenchFigure(_Model):
    """Accuracy under AutoAttack at 8/255 L-inf on float images, as RobustBench measures it
    (:mod:`medrobust.evaluation.stages.robustbench`); not a scorecard row."""

    n: int  # images of the attack subset
    eps: float
    clean_accuracy: float
    robust_accuracy: float  # right on the clean image and on AutoAttack's
    broken_by: dict[str, int] = Field(default_factory=dict)  # AutoAttack member -> images it broke
    largest_linf: float  # the largest perturbation, within eps
    seconds_per_image: float
    definition: str


QUERY_MEMBER = "square through the defense"
"""The member whose images are the defense's adaptive Square run at that budget: queries to the
defended model, so it knows the defense but not the detectors (with a black-box model, the
strongest attacker the guard stage has)."""


class GuardMember(_Model):
    """One member of the guard-aware attacker's portfolio at one budget
    (:mod:`medrobust.evaluation.stages.guard`), on its own: the fraction of images whose member
    image the guard accepts and gets wrong, the fraction flagged, and the accuracy on the
    images it accepts."""

    name: str  # unchanged | non-adaptive | lambda=0 | lambda=1 | ...
    description: str
    evasion_rate: float | None  # None: not run (``not_run`` says why)
    flagged_rate: float | None = None
    accepted: int = 0
    accuracy_on_accepted: float | None = None  # None: no image accepted
    evaded: int = 0  # images this member evaded the guard on
    won: int = 0  # images whose worst case is this member's evasion (the first member in order that evaded)
    runs: list[str] = Field(default_factory=list)
    not_run: str | None = None


class GuardBudget(_Model):
    """The guard against the guard-aware attacker at one budget, worst case per image over the
    members (an image is evaded when any member's image is accepted and labelled wrong):
    ``evasion_rate + correct_accepted_rate + rejected_rate = 1`` (rejected: flagged, or failed
    closed)."""

    eps: float
    n: int
    evasion_rate: float  # attacked images the guard accepts and gets wrong / attacked images
    correct_accepted_rate: float  # accepted with the right label
    flagged_rate: float  # flagged by a detector
    abstained_rate: float  # no label given (flagged with on_flag abstain, or failed closed)
    rejected_rate: float  # not accepted: flagged, or failed closed
    accepted: int
    accuracy_on_accepted: float | None  # None: no attacked image accepted (see the text)
    accuracy_on_accepted_text: str
    members: list[GuardMember] = Field(default_factory=list)


class GuardClean(_Model):
    """The guard on the clean attack-subset images: what it costs when nobody attacks."""

    n: int
    flagged_rate: float
    abstained_rate: float  # the clean abstention rate: the guard's cost
    accepted: int
    accuracy_on_accepted: float | None  # None: no clean image accepted
    accuracy_on_accepted_text: str
    accuracy: float  # accepted with the right label / all clean images


class GuardOutcome(_Model):
    """The guard as served (``mr.guard.from_run``), attacked by one who knows it: its defense and
    detectors (Carlini & Wagner 2017), at every budget of the run's grid."""

    defense: str | None
    detectors: list[str]
    thresholds: dict[str, dict[str, float]]  # detector -> {"score"} or, cross-fitted, {"score", "min", "max", "folds"}
    fpr: float | None  # the false positive rate the thresholds aim at
    calibration: str
    on_flag: str
    attacker: str  # what ran, in words
    lambdas: list[float]
    steps: int
    margin: float
    gradient: str
    clean: GuardClean
    budgets: list[GuardBudget]
    transfer: dict[str, list[GuardBudget]] = Field(default_factory=dict)  # surrogate -> its images through the guard
    seconds_per_image: float
    definition: str
    not_run: str | None = None  # why the guard-aware members did not run (a black-box model), if so

    @property
    def queried_through_defense(self) -> bool:
        """Whether Square's queries through the defense (:data:`QUERY_MEMBER`) went through the
        guard at some budget."""
        return any(m.name == QUERY_MEMBER and m.evasion_rate is not None for b in self.budgets for m in b.members)


class CertifiedPoint(_Model):
    """Certified accuracy at one L2 radius (randomized smoothing)."""

    radius: float  # L2, in [0, 1] image units
    grey_levels_per_pixel: float  # the same L2 norm spread evenly over every pixel: radius / sqrt(C x H x W) x 255
    accuracy: float  # images the smoothed classifier gets right with a certified radius of at least ``radius``
    interval: list[float] | None = None  # 95% Wilson interval over the images


class CertifiedFigure(_Model):
    """Randomized smoothing's certificates on the attack subset (Cohen et al. 2019,
    :mod:`medrobust.evaluation.stages.certify`): a guarantee for the smoothed classifier (noise +
    majority vote), not for the base model; never mixed into the empirical scores."""

    n: int  # images of the attack subset
    sigma: float  # the noise's standard deviation, [0, 1] image units
    n0: int  # selection draws per image
    draws: int  # estimation draws per image (Cohen et al.'s n)
    alpha: float
    pixels: int  # C x H x W of the stored images (the grey-level conversion's)
    points: list[CertifiedPoint]  # at the report's radii (0.1, 0.25, 0.5, 1.0)
    curve: list[CertifiedPoint]  # radius -> certified accuracy, from 0
    abstention_rate: float  # CERTIFY abstained (p_A's lower bound below 1/2)
    smoothed_clean_accuracy: float  # PREDICT right (an abstention counts wrong)
    smoothed_abstention_rate: float  # PREDICT abstained
    base_clean_accuracy: float  # the base model on the same clean images
    seconds_per_image: float
    definition: str
    noise_sigma_trained: float | None = None  # the model's training noise (None: not known, e.g. a loaded model)
    note: str | None = None  # e.g. the model was not trained under the certificate's noise


class RobustnessScore(_Model):
    value: float | None  # 0..100; None: not defined (see the scorecard)
    definition: str


class RunMetrics(_Model):
    """Everything ``metrics.json`` holds (read it back with :func:`read_metrics`).

    Args:
        name: the run's name.
        medrobust_version: the version that wrote it.
        created: when, in UTC (ISO 8601, to the second).
        config: the resolved configuration, every default written out.
        data: the images: source, size, classes and how the data's map to the model's, the
            split, the counts per split, the attack subset's size, the normal class and the
            emergency findings, the files skipped and the run's notes.
        model: the model: its file and SHA-256, whether it is differentiable, its architecture,
            parameters, contract, training and the surrogates' names.
        baseline: the model on every test image.
        attacks: every attack run (white-box, transferred, each budget of a sweep).
        eps_sweep: attack key -> accuracy at each budget of its sweep.
        transfer: the transfer matrix; None without a surrogate.
        defenses: each defense's cost and what it wins back, non-adaptive and adaptive.
        detectors: each detector's rates.
        robustness_score: the scorecard's overall score, with its definition.
        seconds_per_image: stage -> seconds per image.
        seconds_total: the run's wall time.
        model_checks: the model checks (AutoAttack's flags); None in a run made before them.
        robustbench: the accuracy under AutoAttack in RobustBench's terms; None unless asked for.
        guard: the guard stage's figures; None unless the configuration has a ``guard``.
        certified: randomized smoothing's certificates; None unless asked for (``certify``), and
            then absent from metrics.json.
    """

    name: str
    medrobust_version: str
    created: str
    config: dict[str, Any]
    data: dict[str, Any]
    model: dict[str, Any]
    baseline: ClassificationReport
    attacks: list[AttackOutcome]
    eps_sweep: dict[str, list[SweepPoint]]
    transfer: TransferMatrix | None
    defenses: list[DefenseOutcome]
    detectors: list[DetectorOutcome]
    robustness_score: RobustnessScore
    seconds_per_image: dict[str, float]  # stage -> seconds per image
    seconds_total: float
    model_checks: ModelChecks | None = None  # None: a run made before the checks existed
    robustbench: RobustBenchFigure | None = None  # None: not asked for (robustbench: true)
    # None: no guard configured; then left out of metrics.json, which reads as it did before the guard stage
    guard: GuardOutcome | None = Field(None, exclude_if=lambda value: value is None)
    # None: not asked for (certify: {...}); then left out of metrics.json, which reads as it did before certificates
    certified: CertifiedFigure | None = Field(None, exclude_if=lambda value: value is None)

    def attack(self, key: str) -> AttackOutcome:
        """The attack run labelled ``key`` (``"sia@8/255"``); KeyError naming the keys there are."""
        for a in self.attacks:
            if a.key == key:
                return a
        raise KeyError(f"no attack {key!r} in this run; have {[a.key for a in self.attacks]}")


def write_metrics(metrics: RunMetrics, run_dir: str | Path) -> Path:
    """Write ``metrics.json`` as strict JSON (no NaN or infinity: undefined values are null in
    fields that allow it) after checking that it reads back; a value that would not is a bug
    reported here, not a report that fails later."""
    from medrobust.evaluation.run_dir import atomic_write_text, strict_json

    path = Path(run_dir) / METRICS_FILE
    text = strict_json(metrics.model_dump(mode="json"), what=str(path))
    RunMetrics.model_validate(json.loads(text))
    atomic_write_text(path, text)
    return path


def read_metrics(run_dir: str | Path) -> RunMetrics:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.json; run `medrobust evaluate` (or `medrobust demo`) first")
    return RunMetrics.model_validate(json.loads(path.read_text()))
