"""A tenant's experiment configuration (YAML text in the ``medrobust evaluate`` schema), checked
before the job is queued.

Every path in a configuration names a file on the machine that reads it, so on the service
the paths are the service's to fill: the model is the uploaded file, the data the uploaded
images, the run folder the job's. A configuration that sets any of them is refused, as is
one that asks to train a model or a surrogate from another source, or to calibrate a
detector on another folder; and one that says where to run (``execution``: the service's
workers, or the Ray cluster the operator gave them, decide). The rest is validated with the same pydantic schema the command
line uses, after the service has filled its part.
"""

from __future__ import annotations

from typing import Any

from medrobust.evaluation.config import validate_config
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


def check_job_config(raw: dict[str, Any], model_path: str, images_path: str, contract: dict[str, Any]) -> None:
    """Validate the configuration as the worker will run it (the service's paths filled in);
    raises :class:`ConfigRefused` listing every bad field."""
    load = {"path": model_path, **{k: v for k, v in contract.items() if v is not None and k != "normal_class"}}
    filled = {**raw, "name": "job", "output_dir": "jobs", "model": {"load": load},
              "data": {**(raw.get("data") or {}), "source": images_path}}
    if contract.get("normal_class"):
        filled["data"]["normal_class"] = contract["normal_class"]
    try:
        validate_config(filled, "config", show_values=False)  # no value the service filled in is echoed
    except ValueError as err:  # one line per bad field (evaluation.config.invalid_configuration)
        raise ConfigRefused(str(err)) from None


def _get(raw: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = raw
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node

