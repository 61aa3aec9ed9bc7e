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

Everything is checked before any work is done or any file written: the fields (pydantic),
the run name, every attack, defense and detector spec (:meth:`ExperimentConfig.check_components`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medrobust.components import parse_number
from medrobust.data.class_names import DEFAULT_EMERGENCY_FINDINGS
from medrobust.evaluation.adaptive_portfolio import MEMBERS, check_portfolio

DEFAULT_SPLIT = (0.6, 0.2, 0.2)
RUN_NAME = re.compile(r"[A-Za-z0-9._-]+")
REPORT_ONLY_FIELDS = (("data", "normal_class"), ("data", "emergency_findings"), ("execution", None), ("title", None),
                      ("model_version", None))
"""Fields that change no computed result: report settings, and where the work runs (an engine
never changes a batch's result, so a run may be resumed on another engine)."""
"""Settings that change only how finished results are read, not what is computed: a run may be
resumed with them changed (its metrics and report are rebuilt from the stored stages)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    """Where the images come from and how their classes are read.

    ``split``: ``test`` makes every image a test image (the default when the model is loaded
    and nothing needs training); (train, val, test) fractions otherwise. ``class_map``:
    {data class (folder name): model class} for names that differ, or to evaluate a model on
    a subset of its classes. ``normal_class``: the class meaning "nothing found" (found by name
    when left out: normal, no finding, negative, healthy, ...). ``emergency_findings``: the
    findings whose miss is an emergency. All class names match case- and punctuation-blind.
    """

    source: str = "phantom"  # phantom | DIR | nih:CSV,IMAGES_DIR | medmnist:FILE.npz
    size: int = Field(64, ge=16, le=1024)
    per_class: int = Field(300, ge=2)  # phantom only
    phantom_seed: int = 0
    split: Literal["test"] | tuple[float, float, float] | None = None  # None: resolved (see ExperimentConfig)
    split_seed: int = 42
    classes: list[str] | None = None
    class_map: dict[str, str] = Field(default_factory=dict)
    normal_class: str | None = None
    emergency_findings: list[str] = Field(default_factory=lambda: list(DEFAULT_EMERGENCY_FINDINGS))

    @field_validator("split", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() != "test":
            raise ValueError(f"split {value!r}: write 'test' (every image is a test image) or three fractions "
                             "[train, val, test] such as [0.6, 0.2, 0.2]")
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def evaluate_only(self) -> bool:
        return self.split == "test"


class TrainSection(_Section):
    arch: str = "densenet121"
    weights: str = "none"
    trainable: str = "all"
    two_phase: bool = False
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float | None = None
    lr_schedule: Literal["plateau", "cosine"] = "plateau"  # plateau: the study's ReduceLROnPlateau
    warmup_epochs: float = Field(0.0, ge=0)  # linear learning-rate warm-up over this many epochs
    augment: bool = True  # the study's augmentation (flip, zoom, rotation, shifts) on training batches
    adversarial: str | None = None
    data: str | None = None  # a separate training source (its train/val splits); needed with data.split: test

    @model_validator(mode="before")
    @classmethod
    def _no_wall_clock_budget(cls, value: Any) -> Any:
        if isinstance(value, dict) and "max_minutes" in value:
            raise ValueError("max_minutes is gone: a wall-clock budget made the trained model depend on the machine's "
                             "speed. Remove it and set epochs (the run is a fixed amount of work)")
        return value


class LoadSection(_Section):
    path: str
    arch: str | None = None
    classes: list[str] | None = None
    input_size: int | None = None
    intensity: str | None = None
    output_kind: str | None = None
    trust_pickle: bool = False


class ModelConfig(_Section):
    """Train a zoo model with the study's recipe, or load a user's model (exactly one)."""

    train: TrainSection | None = None
    load: LoadSection | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "ModelConfig":
        if (self.train is None) == (self.load is None):
            if self.train is None and self.load is None:
                self.train = TrainSection()
            else:
                raise ValueError("model: give either 'train' or 'load', not both")
        return self


class SurrogateConfig(ModelConfig):
    name: str


class AttackConfig(_Section):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    eps_sweep: list[float] = Field(default_factory=list)
    transfer: bool = True  # also craft on every surrogate and transfer to the model
    white_box: bool = True  # also attack the model itself (false: transfer only, e.g. a black-box model)
    allow_large_eps: bool = False  # L-inf budgets above 64/255 are refused unless this is true

    @field_validator("eps_sweep", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return [parse_number(v) for v in value] if isinstance(value, list) else value


class AdaptiveConfig(_Section):
    """The attacker who knows the defense: a portfolio of attacks, the worst case per image
    (:mod:`medrobust.evaluation.adaptive_portfolio`). ``attack``/``params``: the gradient
    members' attack (its ``steps`` the first of the step doubling); ``portfolio``: the members
    (default all); ``restarts``: random starts of the first gradient member; ``max_steps`` and
    ``max_eot_samples``: the doubling checks' limits; ``eot_samples``: the first EOT draws (None:
    10 for randomised defenses, 1 otherwise); ``square_queries``: the Square member's queries;
    ``masking_eps``: the large budget of the gradient-masking check (None: not run)."""

    enabled: bool = True
    attack: str = "pgd"
    params: dict[str, Any] = Field(default_factory=dict)
    portfolio: list[str] = Field(default_factory=lambda: list(MEMBERS))
    restarts: int = Field(2, ge=1, le=20)
    max_steps: int = Field(80, ge=1)
    eot_samples: int | None = Field(None, ge=1)  # None: 10 for randomised defenses, 1 otherwise
    max_eot_samples: int = Field(80, ge=1)
    square_queries: int = Field(1000, ge=1)
    masking_eps: float | None = 64 / 255

    @field_validator("portfolio")
    @classmethod
    def _members(cls, value: list[str]) -> list[str]:
        return check_portfolio(value)

    @field_validator("masking_eps", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return parse_number(value) if isinstance(value, str) else value


class ReferenceDetectorConfig(_Section):
    enabled: bool = True
    ssim_threshold: float = 0.85
    confidence_drop: float = 0.15
    mean_abs_threshold: float = 20.0


class SqueezeDetectorConfig(_Section):
    enabled: bool = True
    squeezers: list[str] = Field(default_factory=lambda: ["bits:bits=5", "median:size=2", "jpeg", "tv"])
    target_fpr: float = Field(0.05, gt=0, lt=1)
    calibration_images: int = Field(200, ge=10)
    calibration: str | None = None  # a folder of clean images to calibrate on (else validation split or cross-fitting)
    folds: int = Field(5, ge=2, le=50)  # k of the k-fold cross-fitting used when the test set is all there is


class DetectorsConfig(_Section):
    reference: ReferenceDetectorConfig = Field(default_factory=ReferenceDetectorConfig)
    squeeze: SqueezeDetectorConfig = Field(default_factory=SqueezeDetectorConfig)


class ExecutionConfig(_Section):
    """Where the units of work run: ``local`` (this process) or ``ray`` (actors on a Ray cluster:
    ``address`` null starts a local Ray instance, ``auto`` joins the cluster this machine belongs
    to, ``ray://HOST:PORT`` connects through Ray Client). ``workers``: actors (each loads the
    models once; null: one per CPU of the cluster); ``gpus_per_worker``: 0, 1 or a fraction."""

    engine: Literal["local", "ray"] = "local"
    address: str | None = None
    workers: int | None = Field(None, ge=1)
    gpus_per_worker: float = Field(0.0, ge=0.0)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_ray_address(value)

    @field_validator("gpus_per_worker")
    @classmethod
    def _gpus(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError(f"gpus_per_worker {value}: a fraction of one GPU (0 to 1) or a whole number of GPUs")
        return value

    @model_validator(mode="after")
    def _ray_only_options(self) -> "ExecutionConfig":
        if self.engine == "local" and (self.address is not None or self.gpus_per_worker or self.workers is not None):
            raise ValueError("execution.address, workers and gpus_per_worker are Ray options: set execution.engine: "
                             "ray (or --ray on the command line), or remove them")
        return self


RAY_ADDRESS = re.compile(r"(ray://)?[A-Za-z0-9._\-\[\]:]+:[0-9]{1,5}")


def check_ray_address(value: str) -> str | None:
    """A Ray address as given (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``), ``local`` -> None (a
    Ray instance on this machine); anything else is a ValueError saying what is accepted."""
    text = value.strip()
    if text.lower() == "local":
        return None
    if text.lower() == "auto" or RAY_ADDRESS.fullmatch(text):
        return text
    hint = (" (a configuration file? put --ray after it, or give the address: --ray auto CONFIG.yaml)"
            if text.lower().endswith((".yaml", ".yml")) else "")
    raise ValueError(f"Ray address {value!r} is not one of: local (a Ray instance on this machine), auto (the "
                     f"cluster this machine joined with ray start), HOST:PORT or ray://HOST:PORT{hint}")


class ExperimentConfig(_Section):
    name: str = "experiment"
    title: str | None = Field(None, max_length=200)  # how reports name the evaluation (default: its name)
    model_version: str | None = Field(None, max_length=100)  # the evaluated model's version, as its maker names it
    output_dir: str = "runs"
    seed: int = 0
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
        """Build every attack, defense and detector spec once, so a bad name or parameter is an
        error before any data is read or any file written (ValueError naming the field).

        ``check_attack(spec, allow_large_eps=..., **params)`` and ``check_defense(spec)`` replace
        the building (default: the registries' ``build_attack`` and ``build_defense``): the
        service's web process, which never imports torch, checks the specs with
        :mod:`medrobust.layer.component_catalogue`; the squeeze detector's squeezers are then
        checked as the defense specs they are."""
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
        if self.detectors.squeeze.enabled:
            squeeze = self.detectors.squeeze
            if building:
                from medrobust.detection.squeeze import SqueezeDetector

                check("detectors.squeeze", lambda: SqueezeDetector(squeeze.squeezers, target_fpr=squeeze.target_fpr))
            else:
                for i, squeezer in enumerate(squeeze.squeezers):
                    check(f"detectors.squeeze.squeezers[{i}]", lambda s=squeezer: check_defense(s))
        for who, m in [("model", self.model)] + [(f"surrogates[{s.name}]", s) for s in self.surrogates]:
            if m.train is not None and m.train.adversarial:
                check(f"{who}.train.adversarial", lambda m=m: check_attack(m.train.adversarial))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate a YAML experiment file; errors name the file and the field.

    The file is untrusted: over 1 MB, or with YAML anchors or aliases (an alias bomb expands
    a few lines into gigabytes), it is refused (:func:`medrobust.safe_yaml.load_yaml_mapping`).
    """
    from medrobust.safe_yaml import load_yaml_mapping

    path = Path(path)
    raw = load_yaml_mapping(path)
    _merge(raw, overrides or {})
    try:
        return ExperimentConfig.model_validate(raw)
    except Exception as err:  # pydantic.ValidationError: list every bad field
        raise ValueError(f"{path}: invalid configuration:\n{err}") from None


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Overrides into ``base``, section by section (``{"data": {"normal_class": "NORMAL"}}``
    changes one field of the data section and keeps the rest)."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
