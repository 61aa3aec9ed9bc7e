"""Defenses by name with typed parameters, so the CLI, config files and the service build them
the same way: ``build_defense("jpeg:quality=50+tv:weight=0.1")``.

A spec is one or more members joined by ``+`` (applied left to right); each member is a name
plus optional ``key=value`` parameters after a colon, separated by commas. Values are converted
to the constructor's declared types (floats accept fractions: ``weight=1/10``).

``"jpeg+tv"`` with the defaults is the study's hybrid defense: JPEG at quality 75 (the study used
50-80), then ROF total variation with ``weight = 0.1``, the study's lambda on [0, 1] images
(scikit-image weight 0.05; see :mod:`medrobust.defenses.total_variation`).
"""

from __future__ import annotations

import fnmatch
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

from medrobust.attacks.budget import parse_number
from medrobust.defenses.base import Defense

_DEFENSES: dict[str, type[Defense]] = {}
_MEMBER_SPLIT = re.compile(r"\+(?!\d)")  # "+" joins members; in "1e+3" it is part of a number


def register_defense(name: str) -> Callable[[type[Defense]], type[Defense]]:
    """Class decorator: make a defense buildable by ``name`` (and set its ``name``)."""

    def wrap(cls: type[Defense]) -> type[Defense]:
        if name in _DEFENSES and _DEFENSES[name] is not cls:
            raise ValueError(f"defense {name!r} is already registered (by {_DEFENSES[name].__name__})")
        cls.name = name
        _DEFENSES[name] = cls
        return cls

    return wrap


def list_defenses(pattern: str = "*") -> list[str]:
    """Registered defense names matching a glob ``pattern``."""
    _ensure_builtin()
    return sorted(n for n in _DEFENSES if fnmatch.fnmatch(n, pattern))


def _get(name: str) -> type[Defense]:
    _ensure_builtin()
    try:
        return _DEFENSES[name]
    except KeyError:
        raise ValueError(f"unknown defense {name!r}; known: {', '.join(sorted(_DEFENSES))}") from None


def defense_parameters(name: str) -> dict[str, tuple[Any, Any]]:
    """``{parameter: (type, default)}`` of defense ``name``'s constructor."""
    cls = _get(name)
    hints = typing.get_type_hints(cls.__init__)
    out: dict[str, tuple[Any, Any]] = {}
    for pname, p in inspect.signature(cls.__init__).parameters.items():
        if pname == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[pname] = (hints.get(pname, Any), p.default)
    return out


def _convert(name: str, key: str, value: Any, annotation: Any) -> Any:
    """A command-line string to the parameter's declared type (non-strings pass unchanged)."""
    if not isinstance(value, str):
        return value
    args = typing.get_args(annotation)
    base = [a for a in args if a is not type(None)] if args else [annotation]
    target = base[0] if base else str
    text = value.strip()
    if type(None) in args and text.lower() in ("none", "null", ""):
        return None
    try:
        if target is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if target is int:
            return int(text)
        if target is float:
            return parse_number(text)
    except ValueError:
        type_name = getattr(target, "__name__", str(target))
        raise ValueError(f"defense {name}: parameter {key}={value!r} is not a valid {type_name}") from None
    return text


def parse_defense_spec(spec: str) -> list[tuple[str, dict[str, str]]]:
    """``"jpeg:quality=50+tv:weight=0.1"`` -> [("jpeg", {"quality": "50"}), ("tv", {"weight": "0.1"})]."""
    members = []
    for part in _MEMBER_SPLIT.split(spec.strip()):
        name, _, rest = part.strip().partition(":")
        name = name.strip().lower()
        if not name:
            raise ValueError(f"defense spec {spec!r} has an empty member; write e.g. jpeg:quality=50+tv")
        params: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            if "=" not in item:
                raise ValueError(f"defense parameter {item!r} must look like key=value (e.g. {name}:quality=50)")
            key, value = item.split("=", 1)
            params[key.strip().replace("-", "_")] = value.strip()
        members.append((name, params))
    return members


def _build_one(name: str, params: dict[str, Any]) -> Defense:
    signature = defense_parameters(name)
    unknown = sorted(set(params) - set(signature))
    if unknown:
        takes = ", ".join(signature) or "no parameters"
        raise ValueError(f"defense {name}: unknown parameter(s) {unknown}; it takes {takes}")
    kwargs = {k: _convert(name, k, v, signature[k][0]) for k, v in params.items()}
    return _get(name)(**kwargs)


def build_defense(spec: str | Defense, **params: Any) -> Defense:
    """Build a defense from a spec; a :class:`Compose` when it has several members.

    Keyword ``params`` (which win over the spec's) are allowed for a single member only. A
    :class:`Defense` passes through unchanged.
    """
    if isinstance(spec, Defense):
        if params:
            raise ValueError("parameters cannot be applied to an already built defense")
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a defense spec is a non-empty string such as 'jpeg+tv', got {spec!r}")
    members = parse_defense_spec(spec)
    if params and len(members) > 1:
        raise ValueError(f"keyword parameters are ambiguous for the composition {spec!r}; put them in the spec "
                         "(e.g. jpeg:quality=50+tv:weight=0.1)")
    built = [_build_one(name, {**p, **params}) for name, p in members]
    if len(built) == 1:
        return built[0]
    from medrobust.defenses.compose import Compose

    return Compose(built)


def _ensure_builtin() -> None:
    import medrobust.defenses.compose  # noqa: F401  (registers none)
    import medrobust.defenses.jpeg  # noqa: F401  (registers jpeg)
    import medrobust.defenses.squeezers  # noqa: F401  (registers bits, median)
    import medrobust.defenses.total_variation  # noqa: F401  (registers tv)
    import medrobust.defenses.tvm  # noqa: F401  (registers tvm)
