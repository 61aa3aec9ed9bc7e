"""Detectors by name, so the CLI, config files and the service build them the same way.

``build_detector("reference")``, ``build_detector("reference:ssim_threshold=0.9")``,
``build_detector("squeeze")`` or
``build_detector("squeeze:target_fpr=0.01,squeezers=bits:bits=5;median:size=2")``.

Parameters are ``key=value`` separated by commas. Because a squeezer is itself a spec with
colons and commas, ``squeezers=`` must come last: it takes the rest of the string, and its
squeezers are separated by semicolons. Keyword arguments override the spec.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from medrobust.detection.base import Detector
from medrobust.detection.reference import ReferenceDetector
from medrobust.detection.squeeze import SqueezeDetector

_DETECTORS: dict[str, type[Detector]] = {"reference": ReferenceDetector, "squeeze": SqueezeDetector}
_FLOATS = {"ssim_threshold", "confidence_drop", "mean_abs_threshold", "threshold", "target_fpr"}
_INTS = {"batch_size"}


def list_detectors() -> list[str]:
    return sorted(_DETECTORS)


def parse_detector_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"squeeze:target_fpr=0.01,squeezers=bits:bits=5;median:size=2"`` ->
    ``("squeeze", {"target_fpr": "0.01", "squeezers": ["bits:bits=5", "median:size=2"]})``."""
    name, _, rest = spec.strip().partition(":")
    params: dict[str, Any] = {}
    head, sep, squeezers = rest.partition("squeezers=")
    if sep:
        if head and not head.endswith(","):
            raise ValueError(f"detector spec {spec!r}: write squeezers=... as the last parameter")
        params["squeezers"] = [s.strip() for s in squeezers.split(";") if s.strip()]
    for part in filter(None, (p.strip() for p in head.split(","))):
        if "=" not in part:
            raise ValueError(f"detector parameter {part!r} must look like key=value (e.g. {name}:batch_size=32)")
        key, value = part.split("=", 1)
        params[key.strip().replace("-", "_")] = value.strip()
    return name.strip(), params


def build_detector(spec: str, **params: Any) -> Detector:
    """Build a detector from ``name`` or ``name:key=value,...`` plus keyword parameters (which win)."""
    name, from_spec = parse_detector_spec(spec)
    if name not in _DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(list_detectors())}")
    merged = {**from_spec, **params}
    kwargs: dict[str, Any] = {}
    for key, value in merged.items():
        try:
            if isinstance(value, str) and key in _FLOATS:
                value = float(Fraction(value.strip()))
            elif isinstance(value, str) and key in _INTS:
                value = int(value)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"detector {name}: parameter {key}={value!r} is not a number") from None
        kwargs[key] = value
    try:
        return _DETECTORS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"detector {name}: {err}") from None
