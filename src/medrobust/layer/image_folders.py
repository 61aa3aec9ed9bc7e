"""What a face needs to check a folder (or an uploaded archive) of class images before any
model runs, without importing torch: which files count as images (one rule, which reads the
first bytes of a file whose name is not an image's, for DICOM of any name; NIfTI volumes by their
name), and how the folders' names
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
from medrobust.data.io import DICOM_HEAD_BYTES, IMAGE_FILES, IMAGE_SUFFIXES, is_image_file, is_image_name
from medrobust.data.nifti import is_nifti_name

__all__ = ["DICOM_HEAD_BYTES", "IMAGE_FILES", "IMAGE_SUFFIXES", "ClassMatchError", "ClassSettings", "find_normal_class",
           "is_image_file", "is_image_name", "is_nifti_name", "match_classes", "parse_class_map"]
