"""The run's classes: the model's, in its output order, and how the data's classes map onto them.

Labels everywhere in a run are the model's class indices: a folder listing in another order, or
in other words (``NORMAL/`` for ``Normal``, a ``class_map``), is matched by name
(:func:`~medrobust.data.class_names.match_classes`), never by position. A model trained in the run
takes the data's classes. The normal class (for dangerous flips) is found by name or set; the
emergency findings are looked up among the model's classes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from medrobust.data.class_names import canonical_class_name, find_classes, find_normal_class, match_classes
from medrobust.evaluation.config import DataConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassPlan:
    """``classes``: the run's (model's) class names; ``data_classes``: the data's;
    ``label_map[i]``: the model index of data class i; ``normal``: the normal class's index
    (None: dangerous flips are not assessed); ``emergency``: the emergency findings' indices;
    ``untested``: model classes without images."""

    classes: list[str]
    data_classes: list[str]
    label_map: np.ndarray
    normal: int | None
    emergency: list[int]
    untested: list[str]

    def check_surrogate(self, name: str, surrogate) -> None:
        """A loaded surrogate must answer in the model's classes, in the model's order."""
        theirs = [canonical_class_name(c) for c in surrogate.classes]
        if theirs != [canonical_class_name(c) for c in self.classes]:
            raise ValueError(f"surrogate {name}: its classes {list(surrogate.classes)} are not the model's "
                             f"{self.classes} in the same order; use a surrogate with the model's classes")


def plan_classes(data: DataConfig, data_classes: list[str], model_classes: list[str] | None) -> ClassPlan:
    """The plan for data whose classes are ``data_classes`` and a loaded model's ``model_classes``
    (None: the model is trained in the run and takes the data's classes)."""
    if model_classes is not None:
        classes = list(model_classes)
        label_map = match_classes(data_classes, classes, data.class_map)
    else:
        if data.class_map:
            raise ValueError("data.class_map pairs the data's classes with a loaded model's classes; a model "
                             "trained here takes the data's classes: remove class_map")
        classes = list(data_classes)
        label_map = np.arange(len(classes))
    override = data.class_map.get(data.normal_class, data.normal_class) if data.normal_class else None
    untested = [c for j, c in enumerate(classes) if j not in set(label_map.tolist())]
    if untested:
        log.warning("model classes %s have no images in %s: their sensitivity is not assessed", untested, data.source)
    return ClassPlan(classes=classes, data_classes=list(data_classes), label_map=label_map,
                     normal=find_normal_class(classes, override), emergency=find_classes(data.emergency_findings, classes),
                     untested=untested)
