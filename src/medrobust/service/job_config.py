"""A tenant's experiment configuration (YAML text in the ``medrobust evaluate`` schema), checked
before the job is queued.

Every path in a configuration names a file on the machine that reads it, so on the service
the paths are the service's to fill: the model is the uploaded file, the data the uploaded
images, the run folder the job's. A configuration that sets any of them is refused, as is
one that asks to train a model or a surrogate from another source, or to calibrate a
detector on another folder; and one that says where to run (``execution``: the service's
workers, or the Ray cluster the operator gave them, decide). The rest is validated with the same pydantic schema the command
line uses, after the service has filled its part; then every attack, defense and squeezer spec is
checked by name and parameters without torch (:mod:`medrobust.layer.component_catalogue`), and
every parameter that multiplies the job's work (steps, restarts, EOT draws, queries, copies,
iterations, epochs) against the service's ceilings (:data:`medrobust.service.limits.WORK_CEILINGS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medrobust.evaluation.config import ExperimentConfig
from medrobust.layer.component_catalogue import check_attack_spec, check_defense_spec
from medrobust.safe_yaml import ConfigFileError, yaml_text_mapping

_SERVICE_FIELDS: tuple[tuple[str, ...], ...] = (
    ("name",), ("output_dir",), ("data", "source"), ("model",),
    ("detectors", "squeeze", "calibration"),
)
"""Fields the service fills or does not allow: names of files and folders on the server."""


class ConfigRefused(ValueError):
    """The configuration cannot be used on the service; ``str(err)`` says which field and why."""


def parse_job_config(text: str) -> dict[str, Any]:
    """The configuration's mapping, with the service's fields refused; YAML is read with the
    safe loader, anchors and aliases refused (:mod:`medrobust.safe_yaml`)."""
    try:
        raw = yaml_text_mapping(text, "config")
    except ConfigFileError as err:
        raise ConfigRefused(str(err)) from None
    if not raw:
        raise ConfigRefused("config: is empty; leave the field out and give a preset instead")
    if raw.get("model") is not None:
        raise ConfigRefused(
            "config: model: is the uploaded file, which the service fills itself; give the model's contract with the "
            "form fields classes, input_size, intensity, output_kind and normal_class, and remove model: from the "
            "configuration")
    if raw.get("execution") is not None:
        raise ConfigRefused(
            "config: execution: where jobs run (this machine or the service's Ray cluster) is the service's setting "
            "(medrobust serve --ray ADDRESS), not a job's; remove execution: from the configuration")
    for path in _SERVICE_FIELDS:
        if _get(raw, path) is not None:
            raise ConfigRefused(
                f"config: {'.'.join(path)} names {'the model' if path == ('model',) else 'a file or folder'} on the "
                "server, which the service fills itself (the uploaded model and images, the job's run folder); "
                "remove it from the configuration")
    for i, surrogate in enumerate(raw.get("surrogates") or []):
        if isinstance(surrogate, dict) and (surrogate.get("load") is not None or
                                            (surrogate.get("train") or {}).get("data") is not None):
            raise ConfigRefused(
                f"config: surrogates[{i}] loads a model or training data from a path on the server; on the service a "
                "surrogate can only be trained on the uploaded images (give data.split fractions and "
                "surrogates: [{name: small-cnn, train: {arch: small-cnn}}])")
    return raw


def check_job_config(raw: dict[str, Any], model_path: str, images_path: str, contract: dict[str, Any],
                     ceilings: Mapping[str, int]) -> ExperimentConfig:
    """Validate the configuration as the worker will run it (the service's paths filled in), its
    component specs and its work parameters; raises :class:`ConfigRefused` naming the field."""
    load = {"path": model_path, **{k: v for k, v in contract.items()
                                   if v is not None and k not in ("normal_class", "class_map")}}
    filled = {**raw, "name": "job", "output_dir": "jobs", "model": {"load": load},
              "data": {**(raw.get("data") or {}), "source": images_path}}
    for key in ("normal_class", "class_map"):
        if contract.get(key):
            filled["data"][key] = contract[key]
    try:
        config = ExperimentConfig.model_validate(filled)
    except Exception as err:  # pydantic's ValidationError lists every bad field
        raise ConfigRefused(f"config: invalid configuration:\n{err}") from None

    def check_attack(spec: str, allow_large_eps: bool = False, **params: Any) -> None:
        within_ceilings(check_attack_spec(spec, allow_large_eps, **params), ceilings)

    def check_defense(spec: str) -> None:
        for _name, params in check_defense_spec(spec):
            within_ceilings(params, ceilings)

    try:
        config.check_components(check_attack, check_defense)
        adaptive = config.adaptive
        within_ceilings({"max_steps": adaptive.max_steps, "restarts": adaptive.restarts,
                         "eot_samples": adaptive.eot_samples, "max_eot_samples": adaptive.max_eot_samples,
                         "square_queries": adaptive.square_queries}, ceilings, "adaptive.")
        for i, surrogate in enumerate(config.surrogates):
            if surrogate.train is not None:
                within_ceilings({"epochs": surrogate.train.epochs}, ceilings, f"surrogates[{i}].train.")
    except ValueError as err:
        raise ConfigRefused(f"config: {err}") from None
    return config


CEILING_OF = {"max_steps": "steps", "max_eot_samples": "eot_samples", "square_queries": "queries"}
"""Configuration fields bounded by another field's ceiling (:data:`~medrobust.service.limits.WORK_CEILINGS`)."""


def within_ceilings(params: Mapping[str, Any], ceilings: Mapping[str, int], where: str = "") -> None:
    """ValueError naming the first of ``params`` above its ceiling (``where`` prefixes its name)."""
    for key, value in params.items():
        ceiling = ceilings.get(CEILING_OF.get(key, key))
        if ceiling is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and value > ceiling:
            shown = f"{where}{key}={value:g}" if isinstance(value, float) else f"{where}{key}={value}"
            raise ValueError(f"{shown} is above this service's ceiling of {ceiling} for {CEILING_OF.get(key, key)}; "
                             f"use at most {ceiling}, or ask the service's administrator to raise it")


def _get(raw: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = raw
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node

