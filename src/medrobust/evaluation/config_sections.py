"""The sections of an experiment configuration (:class:`~medrobust.evaluation.config.ExperimentConfig`):
data, models (trained or loaded), attacks, the adaptive attacker, detectors and where the work runs.
Every section refuses unknown settings, NaN, infinity and NUL characters."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

from medrobust.data.class_names import DEFAULT_EMERGENCY_FINDINGS
from medrobust.data.splits import check_fractions
from medrobust.evaluation.adaptive_portfolio import MEMBERS, check_portfolio
from medrobust.models.contract import ModelContract
from medrobust.specs.components import check_seed, parse_number
from medrobust.specs.contract_names import intensity_name

DEFAULT_SPLIT = (0.6, 0.2, 0.2)


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
    ``modality`` and ``depth`` choose the phantoms (``source: phantom``): ``cxr`` chest radiographs
    (the default) or ``ct`` head-CT volumes in HU of ``depth`` slices (default 16; ``size`` is then
    the in-plane matrix); a folder's modality is read from its files.
    """

    source: str = "phantom"  # phantom | DIR | nih:CSV,IMAGES_DIR | medmnist:FILE.npz
    size: int | None = Field(None, ge=16, le=1024)  # None: the loaded model's input size (224 if it takes any), else 64
    per_class: int = Field(300, ge=2)  # phantom only
    phantom_seed: Seed = 0
    modality: Literal["cxr", "ct"] = "cxr"  # phantom only: chest radiographs or head-CT volumes in HU
    depth: int | None = Field(None, ge=1, le=256)  # CT phantoms only: slices per volume (None: 16)
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

    @model_validator(mode="after")
    def _phantom_settings(self) -> "DataConfig":
        """``modality`` and ``depth`` choose phantoms, so they mean nothing for a folder (whose
        files say what they are) or with radiographs (which have no slices)."""
        phantom = self.source.strip().partition(":")[0] == "phantom"
        if self.modality != "cxr" and not phantom:
            raise ValueError(f"modality {self.modality} chooses the phantoms, but source is {self.source!r}, whose "
                             "files say what they are; remove modality, or set source: phantom")
        if self.depth is not None and self.modality != "ct":
            raise ValueError(f"depth {self.depth} is the slices of CT phantoms; add modality: ct, or remove depth")
        return self

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
    noise_sigma: float = Field(0.0, ge=0, le=4)  # Gaussian noise on each training batch, not clipped (Cohen et al. 2019)
    early_stopping_patience: int = Field(5, ge=1)  # epochs without a better validation loss before training stops
    # (the best epoch's weights are kept either way); as many as epochs: every epoch runs
    adversarial: str | None = None
    data: str | None = None  # a separate training source (its train/val splits); needed with data.split: test
    intensity: str | None = None  # the network's input convention (None: the architecture's); CT windows in HU:
    # {hu_windows: [[40, 80], [80, 200]]}, one network channel per window (the model contract's forms)

    @field_validator("intensity", mode="before")
    @classmethod
    def _intensity(cls, value: Any) -> Any:
        return None if value is None else intensity_name(value)

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


class CertifyConfig(_Section):
    """Randomized smoothing's certificates (Cohen et al. 2019; the ``certify`` stage,
    :mod:`medrobust.evaluation.stages.certify`): ``sigma``, the Gaussian noise's standard deviation
    in [0, 1] image units (the noise a noise-trained model learnt, ``train.noise_sigma``); ``n0``
    draws select the top class and ``n`` draws bound its probability at error level ``alpha``;
    ``batch``: noisy copies per forward pass (memory, not the result's meaning)."""

    sigma: float = Field(0.25, gt=0, le=4)
    n0: int = Field(100, ge=1, le=10_000_000)
    n: int = Field(1000, ge=1, le=10_000_000)
    alpha: float = Field(0.001, gt=0, lt=0.5)
    batch: int = Field(400, ge=1, le=1_000_000)


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
