"""The experiment configuration: a YAML file validated by pydantic. Every default is written
out into the run's ``config.yaml``, so a run records exactly what it did.

Example (``examples/demo.yaml`` is the demo's)::

    name: demo
    data: {source: phantom, size: 64, per_class: 300}
    model: {train: {arch: densenet121, epochs: 30}}
    surrogates: [{name: small-cnn, train: {arch: small-cnn, epochs: 15}}]
    attacks:
      - {name: sia, params: {eps: 8/255, n_copies: 10}, eps_sweep: [2/255, 4/255, 8/255]}
      - {name: pgd, params: {eps: 8/255}}
    defenses: ["jpeg:quality=75+tv"]
    detectors: {reference: {}, squeeze: {target_fpr: 0.05}}

A vendor's evaluation of their own trained model on all of their images::

    name: vendor
    data: {source: my_images/, normal_class: NORMAL}    # split: test is then the default
    model: {load: {path: model.keras, classes: [NORMAL, PNEUMONIA]}}

Everything is checked before any work is done or any file written: the fields (pydantic:
numbers finite, seeds within what numpy and torch take, no NUL character in any text, the
model's input size an image size), the run name, every attack, defense and detector spec
(:meth:`ExperimentConfig.check_components`). A configuration that fails is reported one line
per setting, named by its place in the file (:func:`invalid_configuration`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from medrobust.evaluation.config_errors import invalid_configuration
from medrobust.evaluation.config_guard import GuardSection, check_guard_section
from medrobust.evaluation.config_paths import PATH_FIELDS, TEXT_FIELDS_NOT_PATHS
from medrobust.evaluation.config_sections import (
    DEFAULT_SPLIT,
    AdaptiveConfig,
    AttackConfig,
    CertifyConfig,
    DataConfig,
    DetectorsConfig,
    ExecutionConfig,
    LoadSection,
    ModelConfig,
    ReferenceDetectorConfig,
    Seed,
    SqueezeDetectorConfig,
    SurrogateConfig,
    TrainSection,
    _Section,
    check_ray_address,
)
from medrobust.specs.components import parse_number

__all__ = ["DEFAULT_SPLIT", "PATH_FIELDS", "REPORT_ONLY_FIELDS", "RUN_NAME", "TEXT_FIELDS_NOT_PATHS", "AdaptiveConfig",
           "AttackConfig", "CertifyConfig", "DataConfig", "DetectorsConfig", "ExecutionConfig", "ExperimentConfig",
           "GuardSection", "LoadSection",
           "ModelConfig", "ReferenceDetectorConfig", "SqueezeDetectorConfig", "SurrogateConfig", "TrainSection",
           "check_ray_address", "invalid_configuration", "load_config", "validate_config"]

RUN_NAME = re.compile(r"[A-Za-z0-9._-]+")
REPORT_ONLY_FIELDS = (("data", "normal_class"), ("data", "emergency_findings"), ("execution", None), ("name", None),
                      ("output_dir", None), ("title", None), ("model_version", None), ("grid", None),
                      ("robustbench", None), ("guard", None), ("certify", None), ("left_out", None))
"""Fields that change no computed result: report settings (a run resumed with them changed has its
metrics and report rebuilt from the stored stages), where the work runs (an engine never changes a
batch's result, so a run may be resumed on another engine), where the run folder is (it may
have been moved or renamed), what the run is called in its report (title, model version), the
grid the scorecard scores on (it reads the stored sweeps), the RobustBench figure and the
certificates (stages of their own, added to what is there; the certificates' folder is named by
their settings, so other settings never reuse them), and the guard stage (likewise; its files are
named by its settings, so a changed guard is measured afresh beside the rest), and what a preset
left out (sentences the scorecard lists)."""


class ExperimentConfig(_Section):
    """One experiment: the run's settings and its sections (see the module docstring).

    Every field is a keyword with a default, so ``ExperimentConfig()`` is a valid (small)
    experiment on the phantoms; :func:`load_config` reads one from YAML.

    Args:
        name: the run folder's name: letters, digits, ``.``, ``_`` and ``-``. Default
            ``"experiment"``.
        title: how reports name the evaluation (at most 200 characters). Default None: its name.
        model_version: the evaluated model's version, as its maker names it (at most 100
            characters). Default None.
        output_dir: the folder of run folders. Default ``"runs"``.
        seed: the run's seed (0 to 2**32 - 1). Default 0.
        device: where the driver computes (``auto``, the default: CUDA when present; ``cpu``,
            ``cuda``, ``cuda:N``).
        batch_size: images per unit of work. Default 32.
        attack_images: test images the attack stages use, stratified by class (at least 3).
            Default 90.
        sample_images: images kept for the report's picture figures (at least 1). Default 4.
        data: where the images come from and how their classes read
            (:class:`~medrobust.evaluation.config_sections.DataConfig`). Default: the phantoms.
        model: train a zoo model or load the user's
            (:class:`~medrobust.evaluation.config_sections.ModelConfig`). Default: train a
            DenseNet121 with the study's recipe.
        surrogates: models to craft transfer attacks on. Default: none.
        attacks: the attacks. Default: SIA at 8/255.
        defenses: defense specs. Default ``["jpeg+tv"]``.
        adaptive: the adaptive attacker against each defense
            (:class:`~medrobust.evaluation.config_sections.AdaptiveConfig`). Default: PGD and
            the whole portfolio.
        detectors: the detectors to run. Default: none listed, none run.
        execution: where the units of work run. Default: locally.
        grid: the budgets every scorecard row is scored on (``["1/255", "2/255", ...]``).
            Default None: the white-box attacker's budgets.
        robustbench: also measure the accuracy under AutoAttack at 8/255 L-inf on float images,
            as RobustBench does (:mod:`medrobust.evaluation.stages.robustbench`). Default False.
        guard: the guard (a defense and the reference-free detectors in front of the model) the
            ``guard`` stage evaluates against an attacker who knows it
            (:class:`~medrobust.evaluation.config_guard.GuardSection`). Default None: not run.
        certify: randomized smoothing's certified L2 radii on the attack subset
            (:class:`~medrobust.evaluation.config_sections.CertifyConfig`,
            :mod:`medrobust.evaluation.stages.certify`). Default None: not run.
        left_out: what the configuration leaves out of what its preset runs elsewhere, one
            sentence each with the reason (a preset on volumes: SIA and JPEG, which refuse them);
            each is listed among the scorecard's not-tested lines (report, statement, summary).
            Default: nothing.

    Raises:
        pydantic.ValidationError: a field refused (:func:`validate_config` reports it one line
            per setting), a ``split`` of ``test`` with a model trained on the run's data, or
            defenses without the adaptive attacker, or a guard the run cannot evaluate.
    """

    name: str = "experiment"
    title: str | None = Field(None, max_length=200)  # how reports name the evaluation (default: its name)
    model_version: str | None = Field(None, max_length=100)  # the evaluated model's version, as its maker names it
    output_dir: str = "runs"
    seed: Seed = 0
    device: str = "auto"
    batch_size: int = Field(32, ge=1)
    attack_images: int = Field(90, ge=3)  # test images the attack stages use (stratified)
    sample_images: int = Field(4, ge=1)  # images kept for the report's picture figures
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    surrogates: list[SurrogateConfig] = Field(default_factory=list)
    attacks: list[AttackConfig] = Field(default_factory=lambda: [AttackConfig(name="sia", params={"eps": "8/255"})])
    defenses: list[str] = Field(default_factory=lambda: ["jpeg+tv"])
    adaptive: AdaptiveConfig = Field(default_factory=AdaptiveConfig)
    detectors: DetectorsConfig = Field(default_factory=DetectorsConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    grid: list[float] | None = None  # the budgets every scorecard row is scored on (None: the white-box attacker's)
    robustbench: bool = False  # also AutoAttack at 8/255 on float images, as RobustBench measures (not a scorecard row)
    guard: GuardSection | None = None  # the guard stage: a defense and detectors attacked by one who knows both
    certify: CertifyConfig | None = None  # randomized smoothing's certificates (None: not run)
    left_out: list[str] = Field(default_factory=list)  # what a preset left out, one sentence each with the reason

    @field_validator("grid", mode="before")
    @classmethod
    def _grid(cls, value: Any) -> Any:
        return sorted({parse_number(v) for v in value}) if isinstance(value, list) else value

    @field_validator("name")
    @classmethod
    def _run_name(cls, value: str) -> str:
        if not RUN_NAME.fullmatch(value) or value in (".", ".."):
            raise ValueError(f"run name {value!r} must be one folder name of letters, digits, '.', '_' and '-' "
                             "(no '/', no '..'); choose e.g. 'vendor-model-v2'")
        return value

    @model_validator(mode="after")
    def _resolve_split(self) -> "ExperimentConfig":
        """``data.split`` left out: ``test`` when the model is loaded and nothing is trained on
        the run's data, else the study's 60/20/20. With ``test``, a model or surrogate to train
        needs its own ``train.data``."""
        trained = [("model", self.model)] + [(f"surrogates[{s.name}]", s) for s in self.surrogates]
        needs_split = [who for who, m in trained if m.train is not None and m.train.data is None]
        if self.data.split is None:
            self.data.split = DEFAULT_SPLIT if needs_split else "test"
        elif self.data.split == "test" and needs_split:
            raise ValueError(
                f"data.split is 'test' (every image is a test image), so {', '.join(needs_split)} cannot be trained "
                "on the run's data; give each a separate training folder (train.data: DIR), load a trained model "
                "(load.path), or use a split such as [0.6, 0.2, 0.2]"
            )
        return self

    @model_validator(mode="after")
    def _defenses_need_their_adaptive_attacker(self) -> "ExperimentConfig":
        """A defense is scored only against the attacker who knows it (and against the plain
        attacks alongside): without the adaptive attack its stage would not run at all, and a
        defense listed but never tested must not pass silently."""
        if self.defenses and not self.adaptive.enabled:
            raise ValueError(
                f"defenses {self.defenses} are listed but adaptive.enabled is false: a defense is evaluated against "
                "an adaptive attacker (and the plain attacks); set adaptive.enabled: true, or remove the defenses"
            )
        return self

    @model_validator(mode="after")
    def _guard_is_the_runs(self) -> "ExperimentConfig":
        """The guard's defense and detectors are ones the run evaluates and calibrates."""
        if self.guard is not None and self.guard.enabled:
            check_guard_section(self.guard, self.defenses, self.detectors)
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def resolved_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def without_report_only(self) -> dict[str, Any]:
        """The configuration minus :data:`REPORT_ONLY_FIELDS` (what decides the computed stages)."""
        data = self.model_dump(mode="json")
        for section, key in REPORT_ONLY_FIELDS:
            if key is None:
                data.pop(section, None)
            else:
                data.get(section, {}).pop(key, None)
        return data

    def check_components(self, check_attack: Callable[..., Any] | None = None,
                         check_defense: Callable[[str], Any] | None = None) -> None:
        """Build every attack, defense and detector spec once, and look up every architecture
        name, so a bad name or parameter is an error before any model is loaded, any data read
        or any file written.

        Args:
            check_attack: called as ``check_attack(spec, allow_large_eps=..., **params)`` instead
                of building the attack. Default None: the registry's ``build_attack``.
            check_defense: called as ``check_defense(spec)`` instead of building the defense.
                Default None: the registry's ``build_defense``. Given, the architectures are not
                looked up (their registry imports torch) and the squeeze detector's squeezers are
                checked as the defense specs they are: the service's web process, which never
                imports torch, checks the specs so with
                :mod:`medrobust.layer.component_catalogue`.

        Raises:
            ValueError: naming the field and what is wrong with it.
        """
        building = check_defense is None
        if check_attack is None:
            from medrobust.attacks.registry import build_attack as check_attack
        if check_defense is None:
            from medrobust.defenses.registry import build_defense as check_defense

        def check(where: str, build) -> None:
            try:
                build()
            except (ValueError, TypeError) as err:
                raise ValueError(f"{where}: {err}") from None

        for i, a in enumerate(self.attacks):
            check(f"attacks[{i}] ({a.name})", lambda a=a: check_attack(a.name, allow_large_eps=a.allow_large_eps,
                                                                        **a.params))
            for e in a.eps_sweep:
                check(f"attacks[{i}].eps_sweep ({e:.4g})",
                      lambda a=a, e=e: check_attack(a.name, allow_large_eps=a.allow_large_eps, **{**a.params, "eps": e}))
        for i, spec in enumerate(self.defenses):
            check(f"defenses[{i}]", lambda spec=spec: check_defense(spec))
        if self.defenses and self.adaptive.enabled:
            check("adaptive", lambda: check_attack(self.adaptive.attack, **self.adaptive.params))
        squeeze = self.detectors.squeeze
        if squeeze is not None and squeeze.enabled:
            if building:
                from medrobust.detection.squeeze import SqueezeDetector

                check("detectors.squeeze", lambda: SqueezeDetector(squeeze.squeezers, target_fpr=squeeze.target_fpr))
            else:
                for i, squeezer in enumerate(squeeze.squeezers):
                    check(f"detectors.squeeze.squeezers[{i}]", lambda s=squeezer: check_defense(s))
        for who, m in [("model", self.model)] + [(f"surrogates[{s.name}]", s) for s in self.surrogates]:
            if m.train is not None and m.train.adversarial:
                check(f"{who}.train.adversarial", lambda m=m: check_attack(m.train.adversarial))
            if not building:  # the zoo's names are looked up in the registry, which imports torch
                continue
            from medrobust.models.registry import get_spec

            for section, arch in (("train", m.train.arch if m.train else None), ("load", m.load.arch if m.load else None)):
                if arch is not None:
                    check(f"{who}.{section}.arch", lambda arch=arch: get_spec(arch))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate a YAML experiment file.

    The file is untrusted: over 1 MB, or with YAML anchors or aliases (an alias bomb expands
    a few lines into gigabytes), it is refused (:func:`medrobust.safety.safe_yaml.load_yaml_mapping`).

    Args:
        path: the YAML file.
        overrides: settings that replace the file's, section by section
            (``{"data": {"normal_class": "NORMAL"}}`` changes one field and keeps the rest).
            Default None.

    Returns:
        The validated configuration.

    Raises:
        ValueError: the file cannot be read safely, or a setting is refused (naming the file and
            the field).
    """
    from medrobust.safety.safe_yaml import load_yaml_mapping

    path = Path(path)
    raw = load_yaml_mapping(path)
    _merge(raw, overrides or {})
    return validate_config(raw, str(path))


def validate_config(raw: Any, where: str | None = None, show_values: bool = True) -> ExperimentConfig:
    """``raw`` (a mapping, as read from YAML) as an :class:`ExperimentConfig`.

    Args:
        raw: the configuration's settings.
        where: the file or field it came from, named in the error. Default None.
        show_values: echo the refused values in the error (the service's check passes False:
            it echoes no value it filled in). Default True.

    Returns:
        The validated configuration.

    Raises:
        ValueError: one line per refused setting, named by its place in the file
            (:func:`invalid_configuration`).
    """
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise invalid_configuration(err, where, show_values=show_values) from None


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Overrides into ``base``, section by section (``{"data": {"normal_class": "NORMAL"}}``
    changes one field of the data section and keeps the rest)."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
