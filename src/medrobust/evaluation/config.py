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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medrobust.components import parse_number


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    source: str = "phantom"  # phantom | DIR | nih:CSV,IMAGES_DIR | medmnist:FILE.npz
    size: int = Field(64, ge=16, le=1024)
    per_class: int = Field(300, ge=2)  # phantom only
    phantom_seed: int = 0
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_seed: int = 42
    classes: list[str] | None = None


class TrainSection(_Section):
    arch: str = "densenet121"
    weights: str = "none"
    trainable: str = "all"
    two_phase: bool = False
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float | None = None
    max_minutes: float | None = None
    adversarial: str | None = None


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

    @field_validator("eps_sweep", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return [parse_number(v) for v in value] if isinstance(value, list) else value


class AdaptiveConfig(_Section):
    """The attacker who knows the defense: differentiates through it (exact / BPDA) and
    averages over its randomness (EOT)."""

    enabled: bool = True
    attack: str = "pgd"
    params: dict[str, Any] = Field(default_factory=dict)
    eot_samples: int | None = None  # None: 10 for randomised defenses, 1 otherwise


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


class DetectorsConfig(_Section):
    reference: ReferenceDetectorConfig = Field(default_factory=ReferenceDetectorConfig)
    squeeze: SqueezeDetectorConfig = Field(default_factory=SqueezeDetectorConfig)


class ExperimentConfig(_Section):
    name: str = "experiment"
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

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def resolved_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate a YAML experiment file; errors name the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: configuration file not found") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the configuration must be a mapping of sections (data, model, attacks, ...)")
    raw.update(overrides or {})
    try:
        return ExperimentConfig.model_validate(raw)
    except Exception as err:  # pydantic.ValidationError: list every bad field
        raise ValueError(f"{path}: invalid configuration:\n{err}") from None
