"""Preprocessing defenses: images in [0, 1] (B, C, H, W) in, images out, same shape and range.

JPEG compression, ROF total variation (the study's formula), Guo et al.'s randomized TVM,
Xu et al.'s bit-depth and median squeezers, composition by name (``build_defense("jpeg+tv")``,
the study's hybrid defense), and :class:`~medrobust.defenses.defended.DefendedClassifier`, a
classifier behind a defense that adaptive attacks (BPDA, EOT) can differentiate through.

Each defense is a function (:func:`jpeg`, :func:`tv_denoise`, :func:`tvm`, :func:`bit_depth`,
:func:`median_filter`) and an ``nn.Module`` twin (:class:`JPEG`, :class:`TotalVariation`,
:class:`RandomizedTVM`, :class:`BitDepth`, :class:`MedianFilter`), all re-exported here:
``from medrobust.defenses import JPEG; JPEG(quality=50)(x)``. Importing this package registers
the defenses by name (its imports run the ``@register_defense`` decorators).
"""

from medrobust.defenses.base import Defense
from medrobust.defenses.compose import Compose
from medrobust.defenses.defended import DefendedClassifier
from medrobust.defenses.identity import Identity
from medrobust.defenses.jpeg import JPEG, jpeg
from medrobust.defenses.registry import (
    build_defense,
    defense_parameters,
    list_defenses,
    parse_defense_spec,
    register_defense,
)
from medrobust.defenses.squeezers import BitDepth, MedianFilter, bit_depth, median_filter
from medrobust.defenses.total_variation import TotalVariation, tv_denoise
from medrobust.defenses.tvm import RandomizedTVM, tvm

__all__ = [
    "JPEG",
    "BitDepth",
    "Compose",
    "DefendedClassifier",
    "Defense",
    "Identity",
    "MedianFilter",
    "RandomizedTVM",
    "TotalVariation",
    "bit_depth",
    "build_defense",
    "defense_parameters",
    "jpeg",
    "list_defenses",
    "median_filter",
    "parse_defense_spec",
    "register_defense",
    "tv_denoise",
    "tvm",
]
