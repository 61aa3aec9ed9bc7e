"""A tenant's experiment configuration (YAML text in the ``medrobust evaluate`` schema), checked
before the job is queued.

Every path in a configuration names a file on the machine that reads it, so on the service
the paths are the service's to fill: the model is the uploaded file, the data the uploaded
images, the run folder the job's. A configuration that sets any of them is refused, as is one
that sets any other path-valued field (a surrogate's or a model's weights or training data, a
detector's calibration folder: the one list is
:data:`medrobust.evaluation.config.PATH_FIELDS`, beside the schema); and one that says where to
run (``execution``: the service's workers, or the Ray cluster the operator gave them, decide).
The rest is validated with the same pydantic schema the command line uses, after the service
has filled its part; then every attack, defense and squeezer spec is checked by name and
parameters without torch (:mod:`medrobust.layer.component_catalogue`), and every parameter that
multiplies the job's work (steps, restarts, EOT draws, queries, copies, iterations, epochs)
against the service's ceilings (:data:`medrobust.service.limits.WORK_CEILINGS`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from medrobust import ModelContract
from medrobust.evaluation.config import PATH_FIELDS, ExperimentConfig, validate_config
from medrobust.layer.component_catalogue import check_attack_spec, check_defense_spec
from medrobust.safety.safe_yaml import ConfigFileError, yaml_text_mapping

_SERVICE_FIELDS: tuple[tuple[str, ...], ...] = (("name",), ("output_dir",), ("data", "source"), ("model",))
"""Fields the service fills itself: the run's name and folder, the uploaded images and model."""


class ConfigRefused(ValueError):
    """The configuration cannot be used on the service; ``str(err)`` says which field and why."""


def parse_job_config(text: str) -> dict[str, Any]:
    """The configuration's mapping, with the service's fields refused; YAML is read with the
    safe loader, anchors and aliases refused (:mod:`medrobust.safety.safe_yaml`)."""
    try:
        raw = yaml_text_mapping(text, "config")
    except ConfigFileError as err:
        raise ConfigRefused(str(err)) from None
    if not raw:
        raise ConfigRefused("config: is empty; leave the field out and give a preset instead")
    data = raw.get("data")
    if data is not None and not isinstance(data, dict):
        raise ConfigRefused(f"config: data: is a {type(data).__name__}, where a mapping of settings is expected "
                            "(e.g. data: {split: [0.6, 0.2, 0.2]})")
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
    _refuse_paths(raw)
    return raw


def _refuse_paths(raw: dict[str, Any]) -> None:
    """Refuse every field of :data:`~medrobust.evaluation.config.PATH_FIELDS` that the
    configuration sets to anything but a value naming no file. The file is never looked at and
    the value never shown, so the answer is the same whether the server has such a file or not."""
    for field, keywords in PATH_FIELDS.items():
        for where, value in _values_at(raw, field.split(".")):
            if value is None or (isinstance(value, str) and value in keywords):
                continue
            allowed = f" (or give one of: {', '.join(sorted(keywords))}, which name no file)" if keywords else ""
            raise ConfigRefused(
                f"config: {where} names a file or folder on the server, which a configuration sent to the service may "
                f"not: the service reads only what you upload (the model and the images); remove it{allowed}")


def _values_at(node: Any, keys: list[str], where: str = "") -> Iterator[tuple[str, Any]]:
    """The values at a dotted field path (``surrogates[].train.weights``) in a raw mapping, each
    with its place (``surrogates[1].train.weights``); parts of another type than the schema's are
    skipped here (the schema refuses them)."""
    if not keys:
        yield where, node
        return
    key, each = (keys[0][:-2], True) if keys[0].endswith("[]") else (keys[0], False)
    if not isinstance(node, dict) or key not in node:
        return
    place = f"{where}.{key}" if where else key
    if not each:
        yield from _values_at(node[key], keys[1:], place)
    elif isinstance(node[key], list):
        for i, item in enumerate(node[key]):
            yield from _values_at(item, keys[1:], f"{place}[{i}]")


def check_job_config(raw: dict[str, Any], model_path: str, images_path: str,
                     contract: ModelContract | Mapping[str, Any], ceilings: Mapping[str, int], *,
                     class_settings: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Validate the configuration as the worker will run it, the service's fields filled in
    (``model_path`` and ``images_path`` relative to the job's upload folder, as the worker reads
    them: no server path can reach a message; the model's ``contract`` (a ModelContract or its
    fields) as the form declared it; the form's ``class_settings``, ``normal_class`` and
    ``class_map``, in the data section), its component specs and its work parameters; raises
    :class:`ConfigRefused` naming every bad field."""
    data = raw.get("data")  # a mapping or None (parse_job_config refused anything else)
    declared = contract if isinstance(contract, ModelContract) else ModelContract.from_options(contract)
    filled = {**raw, "name": "job", "output_dir": "jobs", "model": {"load": {"path": model_path, **declared.declared()}},
              "data": {**(data or {}), "source": images_path}}
    for key, value in (class_settings or {}).items():
        if value:
            filled["data"][key] = value
    try:
        config = validate_config(filled, "config", show_values=False)  # no value the service filled in is echoed
    except ValueError as err:  # one line per bad field (evaluation.config.invalid_configuration); an answer is one line
        head, *fields = (line.strip() for line in str(err).splitlines())
        raise ConfigRefused(" ".join([head, "; ".join(fields)]) if fields else head) from None

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

