"""The names a model's contract accepts for its intensity convention and its output kind, read
without torch, so that the service's web process can refuse a misspelt name before a job is
queued. :class:`medrobust.models.intensity.Intensity` and
:class:`medrobust.models.output_kind.OutputKind` parse through these functions (a test checks
that their members are exactly these names).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

INTENSITY_NAMES = ("unit", "imagenet", "symmetric", "byte")
"""[0, 1] as stored; (x - mean) / std with ImageNet statistics; [-1, 1]; [0, 255]."""
INTENSITY_ALIASES = {"none": "unit", "[0,1]": "unit", "[-1,1]": "symmetric", "[0,255]": "byte"}
INTENSITY_MEANINGS = {
    "unit": "the pixels in [0, 1] as stored (x / 255 of an 8-bit image)",
    "imagenet": "(x - mean) / std with ImageNet's mean and std",
    "symmetric": "[-1, 1] (2x - 1)",
    "byte": "[0, 255] (255x)",
    "hu_windows:LEVEL,WIDTH;...": ("CT windows in HU, one network channel each, clip((HU - LEVEL + WIDTH/2) / WIDTH, "
                                   "0, 1), e.g. hu_windows:40,80;80,200;600,2800"),
    "percentile:LOW,HIGH": "each image scaled so its LOW and HIGH percentiles map to 0 and 1, clipped (MRI-like data)",
}
"""What each intensity convention hands the network, for images x in [0, 1]."""

OUTPUT_KIND_NAMES = ("softmax", "binary", "multilabel")
"""One logit per class (softmax); one logit for the positive class; one sigmoid per finding."""


def intensity_name(value: Any) -> str:
    """The convention ``value`` names, as its one canonical text; ValueError listing the forms.

    The one parser of an intensity convention, for every face (the command line's
    ``--intensity``, the configuration's ``model.load.intensity``, ``intensity=`` in Python, the
    service's form field, a checkpoint's model.json):

    * a name or alias: ``"[-1, 1]"`` -> ``"symmetric"``;
    * CT windows in HU, one network channel per window: the text
      ``"hu_windows:40,80;80,200"`` (also ``windows:``/``window:``), a mapping
      ``{"hu_windows": [[40, 80], [80, 200]]}`` (one window may be given as ``[40, 80]``) or a
      list of ``[level, width]`` pairs -> ``"hu_windows:40,80;80,200"``;
    * per-image percentile normalisation: ``"percentile:1,99"`` (``"percentile"`` alone: 1 and
      99) or ``{"normalize": "percentile", "low": 1, "high": 99}`` -> ``"percentile:1,99"``.

    >>> intensity_name("[-1, 1]"), intensity_name({"hu_windows": [[40, 80], [600, 2800]]})
    ('symmetric', 'hu_windows:40,80;600,2800')
    >>> intensity_name({"normalize": "percentile", "low": 0.5, "high": 99.5}), intensity_name("window: 40, 80")
    ('percentile:0.5,99.5', 'hu_windows:40,80')
    """
    if isinstance(value, Mapping):
        return _mapping_form(value)
    if isinstance(value, list | tuple):
        return _windows_text(value, value)
    text = str(value)
    head, colon, rest = text.partition(":")
    head = head.strip().lower()
    if colon and head in _WINDOW_PREFIXES:
        pairs = [p.split(",") for p in rest.replace(" ", "").split(";") if p]
        return _windows_text(pairs, text)
    if head == PERCENTILE:
        bounds = rest.replace(" ", "").split(",") if colon else ["1", "99"]
        if len(bounds) != 2:
            raise ValueError(f"intensity {text!r}: write percentile:LOW,HIGH, e.g. percentile:1,99")
        return _percentile_text(bounds[0], bounds[1], text)
    key = INTENSITY_ALIASES.get(text.replace(" ", "").lower(), text.lower())
    if key not in INTENSITY_NAMES:
        raise ValueError(f"unknown intensity convention {text!r}; use one of unit (none), imagenet, "
                         "symmetric ([-1,1]), byte ([0,255]), CT windows in HU as hu_windows:LEVEL,WIDTH;... "
                         "(e.g. hu_windows:40,80;80,200), or percentile:LOW,HIGH (e.g. percentile:1,99)")
    return key


HU_WINDOWS = "hu_windows"
"""The canonical text's prefix of CT windows: ``hu_windows:LEVEL,WIDTH;LEVEL,WIDTH``."""
PERCENTILE = "percentile"
"""The canonical text's prefix of per-image percentile normalisation: ``percentile:LOW,HIGH``."""
MAX_WINDOWS = 16
"""The most CT windows a contract takes (each is one network channel)."""
_WINDOW_PREFIXES = (HU_WINDOWS, "windows", "window")


def windows_intensity(windows: Sequence[str]) -> str:
    """CT windows given one by one (the command line's repeated ``--window L,W``, the service form's
    ``window`` field, ``;``-separated) as the intensity text :func:`intensity_name` reads.

    >>> windows_intensity(["40,80", " 80,200 "]), intensity_name(windows_intensity(["40, 80"]))
    ('hu_windows:40,80;80,200', 'hu_windows:40,80')
    """
    return HU_WINDOWS + ":" + ";".join(w.strip() for w in windows)


def hu_windows(name: str) -> tuple[tuple[float, float], ...] | None:
    """The (level, width) pairs of a canonical ``hu_windows:`` text (None for any other convention).

    >>> hu_windows("hu_windows:40,80;600,2800"), hu_windows("unit")
    (((40.0, 80.0), (600.0, 2800.0)), None)
    """
    if not name.startswith(HU_WINDOWS + ":"):
        return None
    return tuple((float(a), float(b)) for a, b in (p.split(",") for p in name.split(":", 1)[1].split(";")))


def percentile_bounds(name: str) -> tuple[float, float] | None:
    """The (low, high) percentiles of a canonical ``percentile:`` text (None for any other convention)."""
    if not name.startswith(PERCENTILE + ":"):
        return None
    low, high = name.split(":", 1)[1].split(",")
    return float(low), float(high)


def _mapping_form(value: Mapping[str, Any]) -> str:
    keys = set(value)
    if keys == {HU_WINDOWS}:
        windows = value[HU_WINDOWS]
        if isinstance(windows, list | tuple) and len(windows) == 2 and all(_is_number(v) for v in windows):
            windows = [windows]  # one window, given as [level, width]
        return _windows_text(windows, dict(value))
    if keys <= {"normalize", "low", "high"} and str(value.get("normalize", "")).lower() == PERCENTILE:
        return _percentile_text(value.get("low", 1), value.get("high", 99), dict(value))
    raise ValueError(f"intensity {dict(value)!r}: write {{hu_windows: [[LEVEL, WIDTH], ...]}} (CT windows in HU) or "
                     "{normalize: percentile, low: 1, high: 99}, or a convention's name (unit, imagenet, symmetric, "
                     "byte)")


def _windows_text(pairs: Any, given: Any) -> str:
    fix = "give each window as LEVEL,WIDTH in HU with a positive width, e.g. hu_windows:40,80;80,200"
    if not isinstance(pairs, list | tuple) or not 1 <= len(pairs) <= MAX_WINDOWS:
        raise ValueError(f"intensity {given!r}: CT windows must be 1 to {MAX_WINDOWS} (level, width) pairs; {fix}")
    out = []
    for pair in pairs:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"intensity {given!r}: the window {pair!r} is not one (level, width) pair; {fix}")
        level, width = (_number(v, given, fix) for v in pair)
        if not width > 0:
            raise ValueError(f"intensity {given!r}: the window ({level:g}, {width:g}) has a width that is not "
                             f"positive; {fix}")
        out.append(f"{level:g},{width:g}")
    return f"{HU_WINDOWS}:" + ";".join(out)


def _percentile_text(low: Any, high: Any, given: Any) -> str:
    fix = "give 0 <= LOW < HIGH <= 100, e.g. percentile:1,99"
    lo, hi = _number(low, given, fix), _number(high, given, fix)
    if not 0 <= lo < hi <= 100:
        raise ValueError(f"intensity {given!r}: the percentiles {lo:g} and {hi:g} are not in order within 0-100; {fix}")
    return f"{PERCENTILE}:{lo:g},{hi:g}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any, given: Any, fix: str) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"intensity {given!r}: {value!r} is not a finite number; {fix}")
    return number


def intensity_required(subject: str, how: str = "--intensity, model.load.intensity, or intensity= in Python") -> str:
    """The sentence refusing ``subject`` (a model file) loaded without its intensity convention.

    Only a medrobust checkpoint records how its network expects its input scaled; for any other
    file (Keras, ONNX, TorchScript, a state dict) a guess of [0, 1] would silently feed a
    network trained on ImageNet-normalised or [-1, 1] inputs images it has never seen, and
    every figure after that would be the wrong model's. So the user states it; ``how`` says where
    (the command-line option, the configuration's field, the Python argument; the service's form
    field)."""
    choices = "; ".join(f"{name}: {meaning}" for name, meaning in INTENSITY_MEANINGS.items())
    return (f"{subject}: the file does not record how the model expects its input scaled, so give the intensity "
            f"convention its training used ({how}) - {choices}")


def output_kind_name(value: str) -> str:
    """``value`` when it is an output kind; ValueError listing them."""
    if value not in OUTPUT_KIND_NAMES:
        raise ValueError(f"unknown output kind {value!r}; use one of {', '.join(OUTPUT_KIND_NAMES)}")
    return value
