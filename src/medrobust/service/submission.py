"""Turn a received upload into a queued job's request, or refuse it with a message the sender can act on.

Everything that can be checked without loading the model is checked here, in the web process,
before the job is queued: the fields (preset or configuration, the model's contract: classes and
the intensity convention are required for any model but a medrobust checkpoint), the model
file's format from its bytes (a ``.pt`` must be TorchScript: a pickled module is never loaded;
a ``.keras`` must be a Keras 3 archive; zip archives are checked from their table of contents
against zip bombs), the images archive (members checked before extraction, then extracted),
the data's classes against the model's by name (with the class map given), the normal class,
the configuration's schema, its attack, defense and squeezer specs by name and parameters, and
its work parameters against the service's ceilings. What needs the model itself (that it loads,
and its output on a blank image against the classes) is the job's first stage, "model check",
in the worker.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medrobust import ModelContract
from medrobust.files.model_formats import is_torch_pickle, is_torchscript, looks_like_onnx
from medrobust.layer.image_folders import (
    ClassMatchError,
    ClassSettings,
    find_normal_class,
    match_classes,
    parse_class_map,
)
from medrobust.layer.presets import PRESETS
from medrobust.safety.model_archive import ModelArchiveError, check_model_archive
from medrobust.service.job_config import ConfigRefused, check_job_config, parse_job_config
from medrobust.service.limits import ServiceLimits
from medrobust.service.upload_archives import ArchiveRefused, extract_checkpoint_archive, extract_images_archive
from medrobust.service.upload_stream import ReceivedForm
from medrobust.specs.contract_names import intensity_name, intensity_required, windows_intensity

TEXT_FIELDS = frozenset({"classes", "input_size", "intensity", "window", "output_kind", "normal_class", "class_map",
                         "preset", "config", "name", "model_version"})
MODEL_FORMATS = ".keras (Keras 3), .onnx, TorchScript .pt/.pth (torch.jit.save), or a .zip of a medrobust checkpoint folder"
MAX_LISTED_IGNORED = 200
MAX_INPUT_SIZE = 4096
MAX_NAME_CHARS = 120
MAX_VERSION_CHARS = 60

FORM_CLASS_SETTINGS = ClassSettings(
    class_map="class_map", normal_class="the normal class field (normal_class)",
    class_map_how="the class map field (class_map: FOLDER=CLASS pairs, comma-separated, e.g. NORMAL=Normal,PNEU=Pneumonia)")
"""The class settings as the upload form and the API name them (the CLI's options mean nothing here)."""


class SubmissionRefused(Exception):
    """An upload that cannot become a job: the HTTP status and one sentence naming the field and the fix."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass(frozen=True)
class PreparedJob:
    request: dict[str, Any]
    """What the worker needs (paths relative to the job's upload folder) and what the API shows."""


def prepare_job(form: ReceivedForm, folder: Path, limits: ServiceLimits) -> PreparedJob:
    """Check the upload received into ``folder`` and extract its archives there; raises
    :class:`SubmissionRefused`. ``folder`` becomes the job's upload folder."""
    model, images = form.files.get("model"), form.files.get("images")
    if model is None:
        raise SubmissionRefused(422, f"model: missing; attach the model file ({MODEL_FORMATS})")
    if images is None:
        raise SubmissionRefused(422, "images: missing; attach a .zip or .tar.gz of one folder of images per class")
    fields = {k: v.strip() for k, v in form.fields.items()}
    preset, config_text = fields.get("preset") or None, fields.get("config") or None
    if preset and config_text:
        raise SubmissionRefused(422, "give either preset or config, not both (config is a whole configuration)")
    if preset and preset not in PRESETS:
        raise SubmissionRefused(422, f"preset: {preset!r} is not one of {', '.join(PRESETS)}")
    contract = _contract(fields)
    settings = _class_settings(fields)
    labels = _labels(fields)
    try:
        config = parse_job_config(config_text) if config_text else None  # refusals of the text itself come first
    except ConfigRefused as err:
        raise SubmissionRefused(422, str(err)) from None
    data_section = (config or {}).get("data") or {}
    for key in ("class_map", "normal_class"):
        if settings.get(key) and data_section.get(key):
            raise SubmissionRefused(422, f"{key}: given both as a field and as config data.{key}; give it once")
    class_map = settings.get("class_map") or data_section.get("class_map") or None
    normal_class = settings.get("normal_class") or data_section.get("normal_class")

    model_path, model_classes = _checked_model(model.path, model.filename, folder, contract, limits)
    try:
        extracted = extract_images_archive(images.path, folder / "images", limits, display_name=images.filename)
    except ArchiveRefused as err:
        raise SubmissionRefused(422, f"images: {err}") from None
    images.path.unlink(missing_ok=True)  # extracted: the archive itself is not kept
    try:
        match_classes(extracted.classes, model_classes, class_map if isinstance(class_map, dict) else None,
                      data_what=f"images ({images.filename})", model_what=f"model ({model.filename})",
                      settings=FORM_CLASS_SETTINGS)
        if isinstance(normal_class, str) and normal_class:
            find_normal_class(model_classes, normal_class, FORM_CLASS_SETTINGS)
    except ClassMatchError as err:
        raise SubmissionRefused(422, f"classes: {err}") from None
    images_path = extracted.root.relative_to(folder).as_posix()

    if config is not None:
        try:
            check_job_config(config, model_path, images_path, contract, limits.ceilings,  # as the worker reads them
                             class_settings=settings)
        except ConfigRefused as err:
            raise SubmissionRefused(422, str(err)) from None
    return PreparedJob({
        **labels,
        "model_file": model.filename or model.path.name,
        "images_file": images.filename or images.path.name,
        "model_path": model_path,
        "images_path": images_path,
        "classes": model_classes,
        "contract": contract.declared(),  # the ModelContract's fields, as the worker passes them to mr.evaluate
        **settings,
        "preset": None if config is not None else (preset or "quick"),
        "config": config,
        "images_kept": extracted.kept,
        "image_classes": extracted.classes,
        "ignored_files": extracted.ignored[:MAX_LISTED_IGNORED],
        "ignored_count": len(extracted.ignored),
    })


def _contract(fields: dict[str, str]) -> ModelContract:
    """The form's model contract fields as a :class:`~medrobust.models.contract.ModelContract`,
    checked by the contract itself (and the input size against the service's own ceiling)."""
    values: dict[str, Any] = {}
    if fields.get("classes"):
        names = [c.strip() for c in fields["classes"].split(",")]
        if any(not n for n in names):
            raise SubmissionRefused(422, f"classes: {fields['classes']!r} has an empty name; give the model's classes "
                                         "in its output order, comma-separated, e.g. Normal,Pneumonia,Pneumothorax")
        values["classes"] = names
    for key in ("input_size", "intensity", "output_kind"):  # input_size: 224, 150,200 or a volume's 16,64,64
        if fields.get(key):
            values[key] = fields[key]
    if fields.get("window"):
        if fields.get("intensity"):
            raise SubmissionRefused(422, f"window: both intensity {fields['intensity']!r} and window were given; CT "
                                         "windows are the model's intensity convention, so give one of them")
        try:
            values["intensity"] = intensity_name(windows_intensity(fields["window"].split(";")))
        except ValueError as err:
            raise SubmissionRefused(422, f"window: {fields['window']!r}: {err}") from None
    try:
        contract = ModelContract.from_options(values, name_fields=True)
    except ValueError as err:
        raise SubmissionRefused(422, str(err)) from None
    if contract.size is not None and max(contract.size) > MAX_INPUT_SIZE:
        raise SubmissionRefused(422, f"input_size: {fields['input_size']!r} has a side over the service's "
                                     f"{MAX_INPUT_SIZE} pixels; give the size the model takes, e.g. 224 or 16,64,64")
    return contract


def _class_settings(fields: dict[str, str]) -> dict[str, Any]:
    """How the images' classes read against the model's (``normal_class``, ``class_map``): the
    data's settings, not the model's contract."""
    settings: dict[str, Any] = {}
    if fields.get("normal_class"):
        settings["normal_class"] = fields["normal_class"]
    if fields.get("class_map"):
        try:
            settings["class_map"] = parse_class_map([p for p in fields["class_map"].split(",") if p.strip()],
                                                    "class_map:")
        except ValueError as err:
            raise SubmissionRefused(422, f"{err}, pairs separated by commas") from None
    return settings


def _labels(fields: dict[str, str]) -> dict[str, str | None]:
    """The job's name and the model's version as the tenant gave them (shown on the job, the
    report and the statement): one line of printable text each."""
    out: dict[str, str | None] = {}
    for key, longest, example in (("name", MAX_NAME_CHARS, "chest triage v2 on site B"),
                                  ("model_version", MAX_VERSION_CHARS, "2.1.0")):
        value = " ".join(fields.get(key, "").split())
        if len(value) > longest or not value.isprintable():
            raise SubmissionRefused(422, f"{key}: give one line of at most {longest} printable characters "
                                         f"(e.g. {example}); got {len(value)} characters")
        out[key] = value or None
    return out


def _checked_model(path: Path, filename: str, folder: Path, contract: ModelContract,
                   limits: ServiceLimits) -> tuple[str, list[str]]:
    """The model's path relative to ``folder`` and its classes; refuses what the service will not load."""
    shown = filename or path.name
    suffix = "".join(path.suffixes[-1:]).lower()
    try:
        if suffix == ".zip":
            checkpoint = extract_checkpoint_archive(path, folder / "model", limits, display_name=shown)
            path.unlink(missing_ok=True)
            classes = _checkpoint_classes(checkpoint, shown)
            given = contract.classes
            if given and [c.casefold() for c in given] != [c.casefold() for c in classes]:
                raise SubmissionRefused(422, f"classes: {shown} is a medrobust checkpoint whose classes are "
                                             f"{', '.join(classes)}; leave classes out (it carries its own)")
            return checkpoint.relative_to(folder).as_posix(), classes
        if suffix not in (".keras", ".onnx", ".pt", ".pth"):
            raise SubmissionRefused(415, f"model: {shown}: not a format the service reads; send {MODEL_FORMATS}")
        check_model_archive(path)
    except (ArchiveRefused, ModelArchiveError) as err:
        raise SubmissionRefused(422, f"model: {str(err).replace(str(path), shown)}") from None
    if suffix in (".pt", ".pth"):
        if is_torch_pickle(path):
            raise SubmissionRefused(422, f"model: {shown} is a pickled torch.save file; the service never unpickles "
                                         "uploads (loading a pickle runs its code): export it with torch.jit.script or "
                                         "torch.jit.trace and torch.jit.save, or to ONNX")
        if not is_torchscript(path):
            raise SubmissionRefused(422, f"model: {shown} is not a TorchScript archive; export it with torch.jit.save "
                                         "(or send .onnx / .keras)")
    elif suffix == ".keras":
        import zipfile

        names = set(zipfile.ZipFile(path).namelist()) if zipfile.is_zipfile(path) else set()
        if "config.json" not in names:
            raise SubmissionRefused(422, f"model: {shown} is not a Keras 3 .keras archive (no config.json inside); "
                                         "re-save it with model.save('model.keras') in Keras 3")
    elif not looks_like_onnx(path):
        raise SubmissionRefused(422, f"model: {shown} does not start like an ONNX model; export it with torch.onnx.export "
                                     "or tf2onnx and send the .onnx file")
    classes = contract.classes
    if not classes:
        raise SubmissionRefused(422, "classes: give the model's classes in its output order, comma-separated "
                                     "(e.g. Normal,Pneumonia,Pneumothorax); only a medrobust checkpoint carries its own")
    if not contract.intensity:  # the worker's loader refuses it too; said here before the job is queued
        raise SubmissionRefused(422, "intensity: " + intensity_required(shown, "the form's field intensity"))
    named = folder / _model_file_name(shown, path.suffix)
    path.rename(named)
    return named.relative_to(folder).as_posix(), list(classes)


def _model_file_name(shown: str, suffix: str) -> str:
    """The uploaded model's name as the worker reads it (and the run records it): the client's
    name made safe (``chest v2.keras`` -> ``chest-v2.keras``), with the suffix the checks read."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(shown).name[:-len(suffix)] if shown.lower().endswith(suffix)
                  else Path(shown).stem).strip("-.")[:80]
    return (stem if stem and stem != "images" else "model") + suffix


def _checkpoint_classes(checkpoint: Path, shown: str) -> list[str]:
    try:
        meta = json.loads((checkpoint / "model.json").read_text(encoding="utf-8"))
        classes = meta["contract"]["classes"]
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
            raise ValueError("classes is not a list of names")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SubmissionRefused(422, f"model: {shown}: its model.json is not a readable medrobust checkpoint "
                                     f"description ({err}); re-save the checkpoint with medrobust") from None
    return classes
