"""The guard a finished run defines, read from its ``config.yaml`` and ``metrics.json`` alone:
its model (the file as the run names it, where that file is now, the SHA-256 the run measured
and the contract), its defense, its reference-free detector with the threshold the run
calibrated, and the run's figures for them, with the exact ``medrobust guard serve`` command.

Reading it loads no model and imports no torch, so the service's web process answers
``GET /api/v1/jobs/{id}/guard.yaml`` with it (DESIGN.md, "The service"); :func:`mr.guard.from_run
<medrobust.layer.guard_from_run.guard_from_run>` builds the guard from the same definition,
so what the platform shows and what is served cannot differ.

A run's relative paths name files from the folder the run was started in. That folder is the
current one when the file is there; otherwise it follows from the run's ``output_dir`` (the run
folder is ``START/output_dir/name``): an ``output_dir`` without ``..`` names START's place above
the run folder, and ``..`` (how the service lays out a job: ``jobs/ID/upload`` beside
``jobs/ID/RUN``) makes START a folder beside the run folder, taken when exactly one holds the
file. Whichever file is found, ``mr.guard.from_run`` serves it only when its SHA-256 is the
run's.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SERVE_COMMAND = "medrobust guard serve"
CALIBRATION_REQUIRED = "calibration images required: --calibration DIR"
"""What a cross-fitted squeeze threshold needs before it can be served (and the flag that gives it)."""


class DefenseNotEvaluated(ValueError):
    """The defense asked for is not one the run evaluated (the message lists those it did)."""


def run_figures(metrics: Any, defense: str | None) -> dict[str, Any]:
    """What the run measured of this guard's parts: the defense's clean cost and its adaptive
    accuracy (worst case, at the adaptive budget), the squeeze detector's rates, and the guard
    stage's figures (the guard attacked as served: evasion, flagged and abstained rates and the
    accuracy on accepted images per budget, the clean abstention rate).

    Args:
        metrics: the run's :class:`~medrobust.evaluation.results.RunMetrics`.
        defense: the guard's defense spec, or None.

    Returns:
        A JSON-ready dict: ``run``, ``created``, ``defense`` (or None), ``squeeze`` (or None) and
        ``guard`` (None when the run's guard stage did not evaluate this defense).
    """
    out: dict[str, Any] = {"run": metrics.name, "created": metrics.created, "defense": None, "squeeze": None}
    for d in metrics.defenses:
        if d.name == defense:
            out["defense"] = {"clean_accuracy": d.clean.accuracy, "clean_cost_pp": d.clean_cost_pp,
                              "adaptive_accuracy": d.adaptive_accuracy, "adaptive_eps": d.adaptive_eps,
                              "adaptive_attack": d.adaptive_attack}
    for det in metrics.detectors:
        if det.name == "squeeze":
            out["squeeze"] = {"detection_rate": dict(det.detection_rate), "fpr_clean": det.fpr_clean,
                              "fpr_benign": dict(det.fpr_benign), "calibration": det.calibration}
    g = metrics.guard
    out["guard"] = None if g is None or g.defense != defense else {
        "detectors": list(g.detectors), "on_flag": g.on_flag, "attacker": g.attacker, "not_run": g.not_run,
        "clean": {"abstention_rate": g.clean.abstained_rate, "flagged_rate": g.clean.flagged_rate,
                  "accuracy_on_accepted": g.clean.accuracy_on_accepted},
        "budgets": [{"eps": b.eps, "evasion_rate": b.evasion_rate, "flagged_rate": b.flagged_rate,
                     "abstained_rate": b.abstained_rate, "accuracy_on_accepted": b.accuracy_on_accepted,
                     "accepted": b.accepted, "n": b.n} for b in g.budgets]}
    return out


@dataclass(frozen=True)
class GuardDefinition:
    """What ``medrobust guard serve --run RUN`` would serve, and what the run measured of it.

    Args:
        run_name: the run's name.
        run_folder: the run folder, absolute.
        model: ``file`` (as the run names it), ``path`` (where that file is now, absolute; None
            when it is not found), ``missing`` (None, or where it was looked for), ``sha256`` (the
            run's), ``contract`` (classes, input size, channels, intensity, output kind).
        defense: the defense served (the run's first, or the one asked for); None for none.
        defenses: every defense the run evaluated (``--defense SPEC`` serves another).
        detectors: the reference-free detectors: ``name``, ``squeezers``, ``threshold`` (None:
            not one to serve), ``cross_fitted``, ``calibration`` (how the run set it) and
            ``calibration_required`` (:data:`CALIBRATION_REQUIRED` when calibration images are needed, else None).
        target_fpr: the false positive rate the detectors' thresholds aim at; None without one.
        calibration: what the threshold was calibrated on, as the run says; None without a detector.
        on_flag: what a flagged image gets by default (``abstain``).
        medrobust_version: the medrobust version that evaluated the run.
        evaluated: the run's figures for this defense and detector (:func:`run_figures`).
        summary: those figures in one line.
        command: the exact command that serves this guard.
        where: the machine the command must run on.
        not_served: detectors the run evaluated that a guard cannot run, each with why.
    """

    run_name: str
    run_folder: str
    model: dict[str, Any]
    defense: str | None
    defenses: list[str]
    detectors: list[dict[str, Any]]
    target_fpr: float | None
    calibration: str | None
    on_flag: str
    medrobust_version: str
    evaluated: dict[str, Any]
    summary: str
    command: str
    where: str
    not_served: list[str]

    @property
    def needs_calibration(self) -> bool:
        """A detector's threshold cannot be served as the run left it: calibration images are required."""
        return any(d["calibration_required"] for d in self.detectors)

    def to_dict(self) -> dict[str, Any]:
        """The definition as JSON-ready (and YAML ``safe_dump``-ready) plain values."""
        out = asdict(self)
        return {"run": {"name": out.pop("run_name"), "folder": out.pop("run_folder")},
                "model": out.pop("model"),
                "defense": {"chosen": out.pop("defense"), "evaluated": out.pop("defenses")}, **out}


def guard_definition(run_dir: str | Path, defense: str | None = None) -> GuardDefinition:
    """The guard the finished run in ``run_dir`` evaluated (module docstring), read without
    loading its model.

    Args:
        run_dir: the run folder (``config.yaml``, ``metrics.json``).
        defense: which of the run's defenses to serve. Default None: the run's first.

    Returns:
        The :class:`GuardDefinition`.

    Raises:
        FileNotFoundError: no finished run there (no ``metrics.json``, or no ``config.yaml``).
        DefenseNotEvaluated: ``defense`` is not one the run evaluated.
        ValueError: the run has nothing to guard with (no defense, no squeeze detector).
    """
    from medrobust.evaluation.config import load_config
    from medrobust.evaluation.results import read_metrics

    root = Path(run_dir).absolute()
    for name in ("config.yaml", "metrics.json"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root}: not a finished run (no {name}); a guard is read from a run that "
                                    "`medrobust evaluate` has finished: wait for it to finish, or run it")
    metrics = read_metrics(root)
    config = load_config(root / "config.yaml")
    if defense is not None and defense not in config.defenses:
        raise DefenseNotEvaluated(f"{root}: the run evaluated the defenses {config.defenses or 'none'}, not "
                                  f"{defense!r}; serve one of those (--defense SPEC)")
    chosen = defense if defense is not None else (config.defenses[0] if config.defenses else None)
    detectors, calibration = _squeeze(config, metrics)
    if chosen is None and not detectors:
        raise ValueError(f"{root}: nothing to guard: the run evaluated no defense and no reference-free detector "
                         "(the squeeze detector); evaluate the model with a defense (defenses: [jpeg+tv]) or the "
                         "squeeze detector (detectors: {squeeze: {}}) first")
    evaluated = run_figures(metrics, chosen)
    command = [SERVE_COMMAND, "--run", shlex.quote(str(root))]
    if defense is not None and defense != config.defenses[0]:
        command += ["--defense", shlex.quote(defense)]
    if any(d["calibration_required"] for d in detectors):
        command += ["--calibration", "DIR"]
    not_served = ["reference: it compares each image with its original, which a served image does not come with"
                  ] if config.detectors.runs_reference else []
    return GuardDefinition(
        run_name=metrics.name, run_folder=str(root), model=_model(root, config, metrics), defense=chosen,
        defenses=list(config.defenses), detectors=detectors,
        target_fpr=config.detectors.squeeze.target_fpr if detectors else None, calibration=calibration,
        on_flag="abstain", medrobust_version=metrics.medrobust_version, evaluated=evaluated,
        summary=figures_line(evaluated, chosen, detectors[0]["target_fpr"] if detectors else None),
        command=" ".join(command),
        where=f"the machine that holds the run folder {root}: the guard reads the model and the run's files there",
        not_served=not_served)


def _squeeze(config: Any, metrics: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The squeeze detector as the run left it (threshold, or why there is none to serve)."""
    sq = config.detectors.squeeze
    if sq is None or not sq.enabled:
        return [], None
    outcome = next((d for d in metrics.detectors if d.name == "squeeze"), None)
    recorded = (outcome.threshold or {}) if outcome is not None else {}
    cross_fitted = "folds" in recorded  # one threshold per fold, none to serve
    threshold = None if cross_fitted else recorded.get("threshold")
    how = outcome.calibration if outcome is not None and outcome.calibration else None
    if outcome is None:
        how = "not calibrated: the run recorded no squeeze threshold"
    return [{"name": "squeeze", "squeezers": list(sq.squeezers), "threshold": threshold, "cross_fitted": cross_fitted,
             "target_fpr": sq.target_fpr, "calibration": how,
             "calibration_required": CALIBRATION_REQUIRED if threshold is None else None}], how


def _model(root: Path, config: Any, metrics: Any) -> dict[str, Any]:
    """The model as the run names it, where it is now, its SHA-256 and its contract."""
    summary = metrics.model or {}
    if config.model.load is None:
        named, candidates = "model", [root / "model"]
    else:
        named = config.model.load.path
        candidates = _candidates(root, config, Path(named))
    found = [c for c in candidates if c.exists()]
    out = {"file": named, "path": str(found[0].absolute()) if len(found) == 1 else None,
           "sha256": summary.get("sha256"), "contract": summary.get("contract") or {}, "missing": None}
    if out["path"] is None:
        where = ", ".join(str(c) for c in candidates)
        out["missing"] = (f"{len(found)} files match {named!r}: {where}" if found
                          else f"{named!r} is not at {where}")
    return out


def _candidates(root: Path, config: Any, path: Path) -> list[Path]:
    """Where a relative path of the run may be (module docstring): the current folder, else the
    folder the run was started in as its ``output_dir`` tells."""
    if path.is_absolute():
        return [path]
    here = Path.cwd() / path
    if here.exists():
        return [here]
    parts = Path(config.output_dir).parts
    if Path(config.output_dir).is_absolute():
        return [here]
    if ".." not in parts:
        return [root.parents[len(parts)] / path] if len(parts) < len(root.parents) else [here]
    if parts == ("..",):
        found = [sibling / path for sibling in sorted(root.parent.iterdir())
                 if sibling.is_dir() and sibling != root and (sibling / path).exists()]
        return found or [here]
    return [here]


def figures_line(evaluated: dict[str, Any], defense: str | None, target_fpr: float | None) -> str:
    """The run's figures of a guard in one line: the defense's accuracy under the adaptive
    attacker and the squeeze detector's lowest detection rate over the run's attacks, at the
    false positive rate it had on clean images.

    Args:
        evaluated: :func:`run_figures`'s dict.
        defense: the defense's spec; None for none.
        target_fpr: the rate the detector's threshold aimed at; None without a detector.

    Returns:
        One line, e.g. ``"jpeg+tv: 62.0% accuracy under adaptive attack (worst case of 2 adaptive
        attacks at 8/255 (...)), 80.0% on clean images; squeeze detector: flags 40.0% of attacked
        images (lowest of 5 attacks: sia@8/255) at 4.4% false positives on clean images (target 5.0%)"``.
    """
    parts = []
    d = evaluated.get("defense")
    if d is not None:
        parts.append(f"{defense}: {_pct(d['adaptive_accuracy'])} accuracy under adaptive attack "
                     f"({d['adaptive_attack']}), {_pct(d['clean_accuracy'])} on clean images")
    s = evaluated.get("squeeze")
    target = f" (target {_pct(target_fpr)})" if target_fpr is not None else ""
    if s is not None and s["detection_rate"]:
        key, rate = min(s["detection_rate"].items(), key=lambda kv: kv[1])
        many = len(s["detection_rate"])
        which = f"lowest of {many} attacks: {key}" if many > 1 else key
        parts.append(f"squeeze detector: flags {_pct(rate)} of attacked images ({which}) at "
                     f"{_pct(s['fpr_clean'])} false positives on clean images{target}")
    elif s is not None:
        parts.append(f"squeeze detector: no attacked image was scored; {_pct(s['fpr_clean'])} false positives "
                     f"on clean images{target}")
    elif target_fpr is not None:
        parts.append("squeeze detector: the run recorded no figures for it")
    return "; ".join(parts) or "the run recorded no figures for this guard"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
