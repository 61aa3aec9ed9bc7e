"""What a face needs to check a folder (or an uploaded archive) of class images before any
model runs, without importing torch: which files count as images, and how the folders' names
pair with a model's classes. The implementations live in ``medrobust.data``
(:mod:`~medrobust.data.io`, :mod:`~medrobust.data.class_names`); this module is the faces'
way to them, so that ``cli`` and ``service`` import only the public layer (DESIGN.md, the
arrows)."""

from __future__ import annotations

from medrobust.data.class_names import (
    ClassMatchError,
    ClassSettings,
    find_normal_class,
    match_classes,
    parse_class_map,
)
from medrobust.data.io import IMAGE_SUFFIXES, is_image_file

__all__ = ["IMAGE_SUFFIXES", "ClassMatchError", "ClassSettings", "find_normal_class", "is_image_file", "match_classes",
           "parse_class_map"]
