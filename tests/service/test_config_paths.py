"""A tenant's configuration names no file on the server (issue 25, point 16).

The configuration schema is walked field by field (pydantic models, recursively, through lists,
optionals and dicts): every field that can hold text must be declared, in
``medrobust.evaluation.config``, either a path (``PATH_FIELDS``) or not one
(``TEXT_FIELDS_NOT_PATHS``), so a field added later fails here until someone decides. A field
whose name says path, file, folder, data, weights, ... may not be declared "not a path". Every
path field is then sent to the service with a server file that exists and one that does not:
both are refused with the same sentence, which names the field and not the file (the service
must not tell a tenant whether a server file exists)."""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal, Union

import pytest
import yaml
from pydantic import BaseModel

from medrobust.evaluation.config import PATH_FIELDS, TEXT_FIELDS_NOT_PATHS, ExperimentConfig

pytest.importorskip("fastapi")

from medrobust.service.job_config import ConfigRefused, parse_job_config  # noqa: E402

PATH_LIKE_WORDS = frozenset({"path", "paths", "source", "data", "dir", "directory", "file", "files", "filename",
                             "folder", "root", "weights", "checkpoint", "calibration", "cache", "location", "url"})
"""Words of a field's name (split at ``_``) that say it may hold a location: such a field is a path."""


def _text_fields(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Every field of ``model`` (recursively) whose value can hold text, by dotted path."""
    found: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        found.update(_walk(info.annotation, f"{prefix}{name}"))
    return found


def _walk(annotation: Any, where: str) -> dict[str, Any]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is str or annotation is Any:
        return {where: annotation}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _text_fields(annotation, f"{where}.")
    if origin is Literal or annotation in (int, float, bool, type(None)):
        return {}
    if origin in (Union, types.UnionType):
        found: dict[str, Any] = {}
        for arg in args:
            found.update(_walk(arg, where))
        return found
    if origin is list:
        return _walk(args[0], f"{where}[]")
    if origin is tuple:
        found = {}
        for arg in args:
            if arg is not Ellipsis:
                found.update(_walk(arg, where))
        return found
    if origin is dict:
        return {where: annotation} if _walk(args[0], where) or _walk(args[1], where) else {}
    raise AssertionError(f"{where}: the schema walk does not know the annotation {annotation!r}; teach it")


def _plain(field: str) -> str:
    return field.removesuffix("[]")


SCHEMA_TEXT_FIELDS = {_plain(f): a for f, a in _text_fields(ExperimentConfig).items()}


def test_the_walk_finds_the_known_path_fields():
    assert {"output_dir", "data.source", "surrogates[].train.weights", "detectors.squeeze.calibration"} <= set(
        SCHEMA_TEXT_FIELDS)
    assert "data.split" not in SCHEMA_TEXT_FIELDS  # Literal["test"] or numbers: names no file


def test_every_text_field_of_the_schema_is_declared_a_path_or_not():
    declared = set(PATH_FIELDS) | {_plain(f) for f in TEXT_FIELDS_NOT_PATHS}
    undeclared = sorted(set(SCHEMA_TEXT_FIELDS) - declared)
    assert not undeclared, (f"text fields {undeclared} of the configuration schema are neither in PATH_FIELDS nor in "
                            "TEXT_FIELDS_NOT_PATHS (medrobust/evaluation/config.py): decide whether each names a file")
    stale = sorted(declared - set(SCHEMA_TEXT_FIELDS))
    assert not stale, f"{stale} are declared but are no text field of the schema"
    assert not set(PATH_FIELDS) & {_plain(f) for f in TEXT_FIELDS_NOT_PATHS}


def test_no_field_named_like_a_path_is_declared_not_a_path():
    suspicious = sorted(f for f in TEXT_FIELDS_NOT_PATHS if PATH_LIKE_WORDS & set(_plain(f).split(".")[-1].split("_")))
    assert not suspicious, f"{suspicious} are named like paths but declared not to be: make them PATH_FIELDS"
    assert all(PATH_LIKE_WORDS & set(f.split(".")[-1].split("_")) for f in PATH_FIELDS)


def _config_setting(field: str, value: str) -> dict[str, Any]:
    """A raw configuration that sets ``field`` (``surrogates[].train.weights``) to ``value``."""
    node: Any = value
    for key in reversed(field.split(".")):
        node = {key[:-2]: [node]} if key.endswith("[]") else {key: node}
    if field.startswith("surrogates[]"):
        node["surrogates"][0].setdefault("name", "s")
    return node


@pytest.mark.parametrize("field", sorted(PATH_FIELDS))
def test_the_service_refuses_every_path_field_without_telling_whether_the_file_exists(field, tmp_path):
    existing = tmp_path / "secret.txt"
    existing.write_text("the server's secret\n")
    answers = []
    for value in (str(existing), str(tmp_path / "missing.txt"), "/etc/passwd", "../../other-tenant/model.onnx"):
        with pytest.raises(ConfigRefused) as refused:
            parse_job_config(yaml.safe_dump(_config_setting(field, value)))
        answers.append(str(refused.value))
    assert len(set(answers)) == 1, answers  # one answer whatever the server holds
    message = answers[0]
    assert "secret" not in message and str(tmp_path) not in message and "passwd" not in message
    first = field.split(".")[0].removesuffix("[]")
    assert message.startswith("config: ") and first in message and "\n" not in message, message


def test_a_weights_keyword_is_allowed_and_only_exactly_spelled():
    for keyword in ("none", "imagenet"):
        parse_job_config(yaml.safe_dump(_config_setting("surrogates[].train.weights", keyword)))  # not refused
    for near in ("IMAGENET", " none", "imagenet/../../etc/passwd"):  # the loader would read these as paths
        with pytest.raises(ConfigRefused, match=re.escape("surrogates[0].train.weights names a file")):
            parse_job_config(yaml.safe_dump(_config_setting("surrogates[].train.weights", near)))


def test_a_surrogate_weights_path_is_refused_over_http(tmp_path):
    from fastapi.testclient import TestClient

    from medrobust.service.app import create_app
    from medrobust.service.store import Store

    from .tiny_uploads import checkpoint_zip, images_zip

    data_dir = tmp_path / "service"
    token = Store(data_dir).create_token("acme")
    config = "surrogates: [{name: s, train: {arch: small-cnn, weights: /etc/passwd}}]\ndata: {split: [0.6, 0.2, 0.2]}\n"
    with TestClient(create_app(data_dir)) as client:
        response = client.post("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}, data={"config": config},
                               files={"model": ("chest.zip", checkpoint_zip()), "images": ("x.zip", images_zip())})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("config: surrogates[0].train.weights names a file or folder on the server")
    assert "passwd" not in response.json()["detail"]
