"""Class names matched as a person reads them, never by position.

A vendor's folders say ``NORMAL`` / ``PNEUMONIA``, their model says ``normal`` / ``pneumonia``,
NIH says ``No Finding``; the order of classes in a folder listing and in a model's output
need not agree. Every place that pairs two lists of class names (data and model, model and
surrogate, the normal class, the emergency findings) goes through this module:

* :func:`canonical_class_name`: case, spaces, ``_``, ``-``, ``.`` and other punctuation do not
  count (``"No_Finding"``, ``"no finding"`` and ``"NO-FINDING"`` are one name);
* :func:`match_classes`: data class index -> model class index, by canonical name, with an
  explicit ``class_map`` for names that differ (or a model evaluated on a subset of its classes);
* :func:`find_normal_class`: the class that means "nothing found", so that a finding reported
  as it can be named a dangerous flip;
* :func:`find_classes`: configured names (e.g. the emergency findings) among a model's classes;
  :func:`class_indices` the same for names that must all be there (an attack's findings);
* :func:`parse_class_map`: ``FOLDER=CLASS`` pairs as a person types them.

An error that tells the user to set a class map or a normal class names the setting as the
face the user is in shows it (:class:`ClassSettings`): a configuration field and a command-line
option by default, the dashboard's form fields on the service.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

NORMAL_CLASS_NAMES: tuple[str, ...] = (
    "normal", "no finding", "no findings", "negative", "healthy", "no disease", "no abnormality",
    "no dr",  # diabetic retinopathy grading (APTOS, EyePACS): "No_DR"
    "no tumor", "notumor",  # brain MRI tumour sets
    "benign",  # lesion sets where the miss is malignant -> benign (BUSI, ISIC)
)
"""Names, in order of preference, that identify the class meaning "nothing found" (compared
canonically; the first that a model's classes contain wins)."""

DEFAULT_EMERGENCY_FINDINGS: tuple[str, ...] = ("pneumothorax",)
"""Findings whose miss is an emergency (a tension pneumothorax kills within minutes)."""


class ClassMatchError(ValueError):
    """Two lists of class names cannot be paired; the message names both lists and the fix."""


@dataclass(frozen=True)
class ClassSettings:
    """How a face names the settings a class-matching error asks the user to set."""

    class_map: str = "data.class_map"
    """The class map, as the face calls it."""
    class_map_how: str = "data.class_map: {folder name: model class} (--class-map FOLDER=CLASS)"
    """How to give one."""
    normal_class: str = "data.normal_class (--normal-class)"
    """The normal class, as the face calls it."""


CONFIG_AND_CLI = ClassSettings()
"""The configuration's field and the command line's option (the default)."""


def parse_class_map(pairs: Sequence[str], what: str = "--class-map") -> dict[str, str]:
    """``["NORMAL=Normal", "PNEU=Pneumonia"]`` -> {"NORMAL": "Normal", "PNEU": "Pneumonia"};
    ValueError naming ``what`` (the option or field the pairs came from) for a malformed pair."""
    out = {}
    for pair in pairs:
        folder, sep, cls = pair.partition("=")
        if not sep or not folder.strip() or not cls.strip():
            raise ValueError(f"{what} {pair.strip()!r} must look like FOLDER=CLASS (e.g. NORMAL=Normal)")
        out[folder.strip()] = cls.strip()
    return out


def canonical_class_name(name: str) -> str:
    """``"No_Finding"`` -> ``"nofinding"``: lower case, letters and digits only."""
    return re.sub(r"[\W_]+", "", str(name).casefold())


def _index(names: Sequence[str], what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, name in enumerate(names):
        key = canonical_class_name(name)
        if not key:
            raise ClassMatchError(f"{what} class {name!r} has no letters or digits; give it a name")
        if key in out:
            raise ClassMatchError(
                f"{what} classes {list(names)} hold {names[out[key]]!r} and {name!r}, which differ only in case or "
                "punctuation; rename one"
            )
        out[key] = i
    return out


def match_classes(data_classes: Sequence[str], model_classes: Sequence[str],
                  class_map: Mapping[str, str] | None = None, *, data_what: str = "data",
                  model_what: str = "model", settings: ClassSettings = CONFIG_AND_CLI) -> np.ndarray:
    """For each data class, the index of the model class it is (an int64 array).

    Names match canonically (:func:`canonical_class_name`). ``class_map`` ({data class: model
    class}, also canonical) pairs names that differ. Without a map every data class must be a
    model class and every model class must have data; with one, model classes without data
    are allowed (a 3-class model on 2-class data: those classes' sensitivity is then not
    assessed). Raises :class:`ClassMatchError` naming both lists and the fix (the settings as
    ``settings`` names them).
    """
    model_index = _index(model_classes, model_what)
    _index(data_classes, data_what)
    mapping = {canonical_class_name(k): v for k, v in (class_map or {}).items()}
    unknown_keys = [k for k in (class_map or {}) if canonical_class_name(k) not in
                    {canonical_class_name(c) for c in data_classes}]
    if unknown_keys:
        raise ClassMatchError(
            f"{settings.class_map} names {unknown_keys}, which are not {data_what} classes ({', '.join(data_classes)}); "
            "map each data class (folder name) to a model class"
        )
    out = np.empty(len(data_classes), dtype=np.int64)
    missing: list[str] = []
    for i, name in enumerate(data_classes):
        target = mapping.get(canonical_class_name(name), name)
        j = model_index.get(canonical_class_name(target))
        if j is None:
            if canonical_class_name(name) in mapping:
                raise ClassMatchError(
                    f"{settings.class_map} maps {data_what} class {name!r} to {target!r}, which is not a {model_what} class "
                    f"({', '.join(model_classes)}); use one of those names"
                )
            missing.append(name)
            continue
        out[i] = j
    if missing:
        raise ClassMatchError(
            f"{data_what} classes {missing} are not {model_what} classes: {data_what} has {', '.join(data_classes)}; "
            f"{model_what} has {', '.join(model_classes)}. Rename the folders, or map them with "
            f"{settings.class_map_how}"
        )
    if len(set(out.tolist())) != len(out):
        raise ClassMatchError(
            f"two {data_what} classes ({', '.join(data_classes)}) map to the same {model_what} class; "
            "each data class needs its own model class"
        )
    unused = [c for j, c in enumerate(model_classes) if j not in set(out.tolist())]
    if unused and not class_map:
        raise ClassMatchError(
            f"{model_what} classes {unused} have no {data_what}: {data_what} has {', '.join(data_classes)}; "
            f"{model_what} has {', '.join(model_classes)}. Add their images, or confirm a subset evaluation with "
            f"{settings.class_map_how}"
        )
    return out


def class_positions(wanted: Sequence[str], classes: Sequence[str]) -> list[int | None]:
    """For each name of ``wanted``, in its order, the index of the class of ``classes`` it names
    (canonically, :func:`canonical_class_name`), or None when ``classes`` has no such class.

    The one name lookup: :func:`find_classes`, :func:`class_indices` and the NIH finding of a
    class (:func:`medrobust.data.nih.finding_for_class`) are all read from it.
    """
    index: dict[str, int] = {}
    for i, c in enumerate(classes):
        index.setdefault(canonical_class_name(c), i)
    return [index.get(canonical_class_name(w)) for w in wanted]


def find_classes(wanted: Sequence[str], classes: Sequence[str]) -> list[int]:
    """Indices of the ``classes`` that ``wanted`` names (canonically), in the order of ``classes``;
    names not present are skipped."""
    return sorted({i for i in class_positions(wanted, classes) if i is not None})


def class_indices(wanted: Sequence[str], classes: Sequence[str], what: str = "findings",
                  among: str = "the model's classes") -> list[int]:
    """The index in ``classes`` of each name of ``wanted`` (canonically), in ``wanted``'s order.

    Raises :class:`ClassMatchError` ("``what`` [unknown names] are not among ``among`` [classes]")
    when a name is not one of ``classes``: a multi-label attack told to flip a finding the model
    does not have must not silently flip nothing.
    """
    positions = class_positions(wanted, classes)
    unknown = [w for w, i in zip(wanted, positions) if i is None]
    if unknown:
        raise ClassMatchError(f"{what} {list(unknown)} are not among {among} {list(classes)}")
    return [int(i) for i in positions if i is not None]


def find_normal_class(classes: Sequence[str], override: str | None = None,
                      settings: ClassSettings = CONFIG_AND_CLI) -> int | None:
    """The index of the class meaning "nothing found", or None when none can be identified.

    ``override`` (the user's ``data.normal_class``) must name one of ``classes``; otherwise the
    first of :data:`NORMAL_CLASS_NAMES` that ``classes`` contain.
    """
    if override:
        found = find_classes([override], classes)
        if not found:
            raise ClassMatchError(
                f"normal class {override!r} is not among the classes ({', '.join(classes)}); "
                f"set {settings.normal_class} to one of them"
            )
        return found[0]
    for name in NORMAL_CLASS_NAMES:
        found = find_classes([name], classes)
        if found:
            return found[0]
    return None


NOT_ASSESSED_NO_NORMAL = ("dangerous flips not assessed: no class is named as normal (set data.normal_class)")
"""What every face says when no class can be identified as normal."""


NO_ANSWER = -1
"""The decision of an image whose model output is not all finite (NaN or infinite): no class.
Such an output is never a prediction; metrics count it as wrong and the baseline lists the image
as not tested (an argmax of NaN would silently read as the first class)."""
NO_ANSWER_NAME = "no answer (output not finite)"


def decision_name(classes: list[str], k: int) -> str:
    """The class name of decision ``k`` (:data:`NO_ANSWER_NAME` for :data:`NO_ANSWER`)."""
    return NO_ANSWER_NAME if k == NO_ANSWER else classes[k] if 0 <= k < len(classes) else str(k)
