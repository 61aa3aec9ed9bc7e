"""Detectors by name, so the CLI, config files and the service build them the same way.

``build_detector("reference")``, ``build_detector("reference:ssim_threshold=0.9")``,
``build_detector("squeeze")`` or
``build_detector("squeeze:target_fpr=0.01,squeezers=bits:bits=5;median:size=2")``.

Parameters are ``key=value`` separated by commas. Because a squeezer is itself a spec with
colons and commas, ``squeezers=`` must come last: it takes the rest of the string, and its
squeezers are separated by semicolons. Keyword arguments override the spec.
"""

from __future__ import annotations

from typing import Any

from medrobust.detection.base import Detector
from medrobust.specs.components import ComponentRegistry, parse_spec

_DETECTORS: ComponentRegistry[Detector] = ComponentRegistry("detector")
register_detector = _DETECTORS.register
"""Class decorator: ``@register_detector("squeeze")`` makes a detector buildable by name. The
built-in detectors register when :mod:`medrobust.detection` (whose ``__init__`` imports them) is
imported."""


def list_detectors(pattern: str = "*") -> list[str]:
    """Registered detector names matching a shell-style ``pattern``, sorted.

    Args:
        pattern: a glob such as ``"s*"``. Default ``"*"``: every detector.

    Returns:
        The matching names, e.g. ``['reference', 'squeeze']``.
    """
    return _DETECTORS.names(pattern)


def parse_detector_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split a spec into its name and its raw parameters (not converted yet).

    Args:
        spec: ``name`` or ``name:key=value,...``, with ``squeezers=`` last (it takes the rest of
            the string; its squeezers are separated by ``;``).

    Returns:
        ``(name, {key: value string, "squeezers": [spec, ...]})``.

    Raises:
        ValueError: ``squeezers=`` is not the last parameter, or a parameter is not ``key=value``.

    Example:

    >>> parse_detector_spec("squeeze:target_fpr=0.01,squeezers=bits:bits=5;median:size=2")
    ('squeeze', {'target_fpr': '0.01', 'squeezers': ['bits:bits=5', 'median:size=2']})
    """
    head, sep, squeezers = spec.strip().partition("squeezers=")
    if sep and head and not head.endswith((",", ":")):
        raise ValueError(f"detector spec {spec!r}: write squeezers=... as the last parameter")
    name, params = parse_spec(head.rstrip(","), "detector")
    out: dict[str, Any] = dict(params)
    if sep:
        out["squeezers"] = [s.strip() for s in squeezers.split(";") if s.strip()]
    return name, out


def build_detector(spec: str, **params: Any) -> Detector:
    """Build a detector from ``name`` or ``name:key=value,...`` plus keyword parameters (which win).

    Args:
        spec: ``"reference"``, ``"reference:ssim_threshold=0.9"``, ``"squeeze"`` or
            ``"squeeze:target_fpr=0.01,squeezers=bits:bits=5;median:size=2"`` (module docstring).
        **params: constructor parameters; they override the spec's.

    Returns:
        The detector (uncalibrated: call ``fit`` before ``detect`` where it
        ``requires_calibration``).

    Raises:
        ValueError: an unknown name or parameter, or a value that does not convert or is out
            of range.

    Example:

    >>> list_detectors()
    ['reference', 'squeeze']
    >>> build_detector("reference:ssim_threshold=0.9").ssim_threshold
    0.9
    >>> build_detector("squeeze:target_fpr=0.01,squeezers=bits:bits=4;median:size=3").squeezer_names
    ['bits:bits=4', 'median:size=3']
    """
    name, from_spec = parse_detector_spec(spec)
    return _DETECTORS.build(name, {**from_spec, **params})
