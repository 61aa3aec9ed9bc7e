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

import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from medrobust.data.class_names import DEFAULT_EMERGENCY_FINDINGS
from medrobust.data.splits import check_fractions
from medrobust.evaluation.adaptive_portfolio import MEMBERS, check_portfolio
from medrobust.models.contract import ModelContract
from medrobust.specs.components import check_seed, parse_number

DEFAULT_SPLIT = (0.6, 0.2, 0.2)
RUN_NAME = re.compile(r"[A-Za-z0-9._-]+")
REPORT_ONLY_FIELDS = (("data", "normal_class"), ("data", "emergency_findings"), ("execution", None), ("name", None),
                      ("output_dir", None), ("title", None), ("model_version", None))
"""Fields that change no computed result: report settings (a run resumed with them changed has its
metrics and report rebuilt from the stored stages), where the work runs (an engine never changes a
batch's result, so a run may be resumed on another engine), where the run folder is (it may
have been moved or renamed) and what the run is called in its report (title, model version)."""


PATH_FIELDS: dict[str, frozenset[str]] = {
    "output_dir": frozenset(),
    "data.source": frozenset({"phantom"}),
    "model.load.path": frozenset(),
    "model.train.weights": frozenset({"none", "imagenet"}),
    "model.train.data": frozenset(),
    "surrogates[].load.path": frozenset(),
    "surrogates[].train.weights": frozenset({"none", "imagenet"}),
    "surrogates[].train.data": frozenset(),
    "detectors.squeeze.calibration": frozenset(),
}
"""Every field whose value names a file or folder on the machine that runs the configuration
(``[]``: each item of a list), with the values that name none (``weights: imagenet`` is the
local torch hub cache, ``source: phantom`` the generator). The service refuses each of them in
a tenant's configuration (:mod:`medrobust.service.job_config`): on a server a path is the
server's file, and opening it would let a tenant read, or learn of, files that are not theirs.
It lives here, beside the schema, so that whoever adds a field decides here whether it is a
path; ``tests/service/test_config_paths.py`` walks the schema and fails on any text field
listed neither here nor in :data:`TEXT_FIELDS_NOT_PATHS`."""

TEXT_FIELDS_NOT_PATHS: frozenset[str] = frozenset({
    "name",  # the run's folder name: one component, checked by RUN_NAME
    "title", "model_version",  # words for the report's title
    "device",
    "data.classes", "data.class_map", "data.normal_class", "data.emergency_findings",  # class names
    *(f"{m}.{f}" for m in ("model", "surrogates[]") for f in (
        "train.arch", "train.trainable", "train.adversarial",  # a zoo name, a layer policy, an attack spec
        "load.arch", "load.classes", "load.intensity", "load.output_kind")),  # the contract's names
    "surrogates[].name",
    "attacks[].name", "attacks[].params", "defenses[]",  # component specs: the registries read no file
    "adaptive.attack", "adaptive.params", "adaptive.portfolio",
    "detectors.squeeze.squeezers",
    "execution.address",  # a Ray address, not a file (the service refuses execution: whole)
})
"""Every other field that can hold text, each declared not to name a file (see :data:`PATH_FIELDS`)."""


Seed = Annotated[int, AfterValidator(check_seed)]
"""A seed numpy and torch both take (0 to 2**32 - 1): a larger one would fail deep in a run."""


class _Section(BaseModel):
    """Every section: unknown settings refused, and NaN and infinity (``.nan``, ``.inf`` in
    YAML) and NUL characters refused in every value, those held in free-form parameters too."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _plain_values(cls, value: Any) -> Any:
        """A NUL character ends a file name in the operating system (an ``output_dir`` with one
        would fail as "embedded null byte" mid-run), and no setting means anything with NaN or
        infinity (an attack's ``eps: .nan`` would be written to config.yaml as null)."""
        for where, item in _leaves(value):
            at = f"{where} " if where else ""
            if isinstance(item, str) and "\x00" in item:
                raise ValueError(f"{at}contains a NUL character (\\x00), which no file name or setting can hold; remove it")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"{at}is {item}, not a finite number; write e.g. 8/255 or 0.03")
        return value


def _leaves(value: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """The plain values in ``value`` with their place in it (``eps``, ``[1]``; "" for ``value``
    itself): those inside its lists and mappings, keys included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(key, where)
            yield from _leaves(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{where}[{i}]")
    else:
        yield where, value


class DataConfig(_Section):
    """Where the images come from and how their classes are read.

    ``size``: the side images are read at; left out, the loaded model's own input size (224 for
    a model that takes any size; 64 for a model trained in the run), so a model is never tested
    on images it must upscale. ``split``: ``test`` makes every image a test image (the default
    when the model is loaded and nothing needs training); (train, val, test) fractions otherwise. ``class_map``:
    {data class (folder name): model class} for names that differ, or to evaluate a model on
    a subset of its classes. ``normal_class``: the class meaning "nothing found" (found by name
    when left out: normal, no finding, negative, healthy, ...). ``emergency_findings``: the
    findings whose miss is an emergency. All class names match case- and punctuation-blind.
    """

    source: str = "phantom"  # phantom | DIR | nih:CSV,IMAGES_DIR | medmnist:FILE.npz
    size: int | None = Field(None, ge=16, le=1024)  # None: the loaded model's input size (224 if it takes any), else 64
    per_class: int = Field(300, ge=2)  # phantom only
    phantom_seed: Seed = 0
    split: Literal["test"] | tuple[float, float, float] | None = None  # None: resolved (see ExperimentConfig)
    split_seed: Seed = 42
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

    @field_validator("split")
    @classmethod
    def _fractions_sum_to_one(cls, value: Any) -> Any:
        if isinstance(value, tuple):
            check_fractions(value)  # non-negative, finite, summing to 1: else a ValueError saying so
        return value

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


class LoadSection(_Section, ModelContract):
    """A user's model file (``path``) and, beside it, the fields of its
    :class:`~medrobust.models.contract.ModelContract` (``classes`` in the model's output order and
    ``intensity`` are required for anything but a medrobust checkpoint folder, checked when the
    model loads, before any image is read). The contract's values are validated by the contract
    itself; :attr:`contract` is it without the path::

        model: {load: {path: model.onnx, classes: [Normal, Pneumonia], input_size: 224, intensity: imagenet}}
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    path: str

    @property
    def contract(self) -> ModelContract:
        """The declared contract of the model at :attr:`path`."""
        return ModelContract.model_validate({name: getattr(self, name) for name in ModelContract.model_fields})

    @classmethod
    def of(cls, path: str, contract: ModelContract) -> LoadSection:
        """The section loading ``path`` with ``contract`` (the fields it declares, beside the path)."""
        return cls.model_validate({"path": path, **contract.declared()})

    @model_serializer(mode="wrap")
    def _path_first(self, handler: Any) -> Any:
        """``path`` first in config.yaml, then the contract, as a reader expects them."""
        data = handler(self)
        return {"path": data.pop("path"), **data} if isinstance(data, dict) and "path" in data else data


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
    eps_sweep: list[float] = Field(default_factory=list)  # further budgets the portfolio runs at (the effort the
    # main budget's checks reached), so a defense's adaptive row is measured on a grid like the attacks' sweeps

    @field_validator("portfolio")
    @classmethod
    def _members(cls, value: list[str]) -> list[str]:
        return check_portfolio(value)

    @field_validator("masking_eps", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return parse_number(value) if isinstance(value, str) else value

    @field_validator("eps_sweep", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return [parse_number(v) for v in value] if isinstance(value, list) else value


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
    """The detectors to run: each runs only when it is listed (``reference: {}`` runs the study's
    detector with its defaults) and not ``enabled: false``; a preset lists the ones it runs.
    Nothing listed: no detector runs, and the report says detection was not tested."""

    reference: ReferenceDetectorConfig | None = None
    squeeze: SqueezeDetectorConfig | None = None

    @property
    def runs_reference(self) -> bool:
        return self.reference is not None and self.reference.enabled

    @property
    def runs_squeeze(self) -> bool:
        return self.squeeze is not None and self.squeeze.enabled


class ExecutionConfig(_Section):
    """Where the units of work run: ``local`` (this process) or ``ray`` (actors on a Ray cluster:
    ``address`` null starts a local Ray instance, ``auto`` joins the cluster this machine belongs
    to, ``ray://HOST:PORT`` connects through Ray Client). ``workers``: actors (each loads the
    models once; null: one per CPU of the cluster); ``gpus_per_worker``: 0, 1 or a fraction;
    ``threads_per_worker``: each actor's intra-op threads, and the CPUs Ray reserves for it (1:
    a unit's result then equals a one-thread local run's, bit for bit)."""

    engine: Literal["local", "ray"] = "local"
    address: str | None = None
    workers: int | None = Field(None, ge=1)
    gpus_per_worker: float = Field(0.0, ge=0.0)
    threads_per_worker: int = Field(1, ge=1, le=256)  # intra-op threads (and Ray CPUs) per actor

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
        if self.engine == "local" and (self.address is not None or self.gpus_per_worker or self.workers is not None
                                       or self.threads_per_worker != 1):
            raise ValueError("execution.address, workers, gpus_per_worker and threads_per_worker are Ray options: set "
                             "execution.engine: ray (or --ray on the command line), or remove them")
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
        """Build every attack, defense and detector spec once, and look up every architecture
        name, so a bad name or parameter is an error before any model is loaded, any data read
        or any file written (ValueError naming the field).

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
    """Read and validate a YAML experiment file; errors name the file and the field.

    The file is untrusted: over 1 MB, or with YAML anchors or aliases (an alias bomb expands
    a few lines into gigabytes), it is refused (:func:`medrobust.safety.safe_yaml.load_yaml_mapping`).
    """
    from medrobust.safety.safe_yaml import load_yaml_mapping

    path = Path(path)
    raw = load_yaml_mapping(path)
    _merge(raw, overrides or {})
    return validate_config(raw, str(path))


def validate_config(raw: Any, where: str | None = None, show_values: bool = True) -> ExperimentConfig:
    """``raw`` (a mapping, as read from YAML) as an :class:`ExperimentConfig`; a ValueError from
    :func:`invalid_configuration` (``where`` names the file or field it came from) otherwise."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise invalid_configuration(err, where, show_values=show_values) from None


def invalid_configuration(err: ValidationError, where: str | None = None, what: str = "configuration",
                          show_values: bool = True) -> ValueError:
    """pydantic's report as the user should read it: one line per setting, named by its place in
    the file (``attacks[0].eps_sweep``), saying what is wrong and, for pydantic's own checks, the
    value given (unless ``show_values`` is False: the service echoes no value it filled in); no
    error codes, no links. The alternatives of a union (``split``: ``test`` or three fractions)
    are one line. ``where``: the file or field it came from; ``what``: what was being read (any
    pydantic model's errors read the same way)."""
    fields: dict[str, list[str]] = {}
    for error in err.errors(include_url=False):
        path, message = _located(error, show_values)
        fields.setdefault(path, [])
        if message not in fields[path]:
            fields[path].append(message)
    lines = [f"{path or 'configuration'}: {' or '.join(messages)}" for path, messages in fields.items()]
    head = f"{where}: invalid {what}" if where else f"invalid {what}"
    if len(lines) == 1:
        return ValueError(f"{head}: {lines[0]}")
    return ValueError(f"{head} ({len(lines)} settings):\n" + "\n".join(f"  {line}" for line in lines))


_UNION_MEMBER = re.compile(r"^(literal|tuple|list|dict|set|frozenset|function-[a-z]+|union|tagged-union|nullable|"
                           r"is-instance|chain|lax-or-strict|json-or-python)\[|^(int|float|str|bool|bytes|none)$")
"""How pydantic names the member of a union that an error is about (``literal['test']``)."""
_SECTION_NAMES = frozenset({"DataConfig", "TrainSection", "LoadSection", "ModelConfig", "SurrogateConfig",
                            "AttackConfig", "AdaptiveConfig", "ReferenceDetectorConfig", "SqueezeDetectorConfig",
                            "DetectorsConfig", "ExecutionConfig"})


def _located(error: Any, show_values: bool = True) -> tuple[str, str]:
    """(the setting's place, the message) of one pydantic error."""
    path, member, inner = "", None, ""
    for item in error["loc"]:
        if member is not None:
            inner += f"[{item}]" if isinstance(item, int) else f".{item}"
        elif isinstance(item, int):
            path += f"[{item}]"
        elif _UNION_MEMBER.match(item) or item in _SECTION_NAMES:
            member = item
        else:
            path += f".{item}" if path else item
    kind, text = error["type"], str(error["msg"])
    if kind == "value_error":  # our own sentence, which names the value
        message = text.removeprefix("Value error, ")
    elif kind == "extra_forbidden":
        message = "is not a setting here; remove it or check its spelling"
    elif kind == "missing":
        message = "is required"
    else:
        message = text[:1].lower() + text[1:] + (f" (got {_shown(error.get('input'))})" if show_values else "")
    if inner:
        message += f" (at {inner.lstrip('.')} of {member})"
    return path, message


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Overrides into ``base``, section by section (``{"data": {"normal_class": "NORMAL"}}``
    changes one field of the data section and keeps the rest)."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
