"""Attacks by name with typed parameters, so the CLI, config files and the service build
them the same way: ``build_attack("sia", eps="8/255", n_copies=10)`` or
``build_attack("pgd:eps=8/255,steps=20")``."""

from __future__ import annotations

import collections.abc
import fnmatch
import inspect
import typing
from collections.abc import Callable
from typing import Any

from medrobust.attacks.budget import parse_number
from medrobust.attacks.engine import Attack

_ATTACKS: dict[str, type[Attack]] = {}


def register_attack(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """Class decorator: make an attack buildable by ``name``."""

    def wrap(cls: type[Attack]) -> type[Attack]:
        if name in _ATTACKS:
            raise ValueError(f"attack {name!r} is already registered")
        cls.name = name
        _ATTACKS[name] = cls
        return cls

    return wrap


def list_attacks(pattern: str = "*") -> list[str]:
    _ensure_builtin()
    return sorted(n for n in _ATTACKS if fnmatch.fnmatch(n, pattern))


def attack_parameters(name: str) -> dict[str, tuple[Any, Any]]:
    """``{parameter: (type, default)}`` of attack ``name``'s constructor."""
    cls = _get(name)
    hints = typing.get_type_hints(cls.__init__)
    out = {}
    for pname, p in inspect.signature(cls.__init__).parameters.items():
        if pname == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[pname] = (hints.get(pname, Any), p.default)
    return out


def _get(name: str) -> type[Attack]:
    _ensure_builtin()
    try:
        return _ATTACKS[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(sorted(_ATTACKS))}") from None


def _convert(name: str, key: str, value: Any, annotation: Any) -> Any:
    """Turn a string from the command line into the parameter's declared type."""
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
        if target is float:
            return parse_number(text)
        if target is int:
            return int(text)
        if typing.get_origin(target) in (list, tuple, collections.abc.Sequence) or target in (list, tuple):
            return [t for t in (s.strip() for s in text.replace("|", ";").split(";")) if t]
    except ValueError:
        raise ValueError(f"attack {name}: parameter {key}={value!r} is not a valid {getattr(target, '__name__', target)}") from None
    return text


def parse_attack_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"sia:eps=8/255,n_copies=10"`` -> ("sia", {"eps": "8/255", "n_copies": "10"})."""
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        if "=" not in part:
            raise ValueError(f"attack parameter {part!r} must look like key=value (e.g. {name}:eps=8/255)")
        key, value = part.split("=", 1)
        params[key.strip().replace("-", "_")] = value.strip()
    return name.strip(), params


def build_attack(spec: str, **params: Any) -> Attack:
    """Build an attack from a name or ``name:key=value,...`` plus keyword parameters (which win)."""
    name, from_spec = parse_attack_spec(spec)
    merged: dict[str, Any] = {**from_spec, **params}
    signature = attack_parameters(name)
    unknown = sorted(set(merged) - set(signature))
    if unknown:
        raise ValueError(f"attack {name}: unknown parameter(s) {unknown}; it takes {', '.join(signature)}")
    kwargs = {k: _convert(name, k, v, signature[k][0]) for k, v in merged.items()}
    return _get(name)(**kwargs)


def _ensure_builtin() -> None:
    import medrobust.attacks.block_shuffle  # noqa: F401  (registers block-shuffle)
    import medrobust.attacks.gradient_attacks  # noqa: F401  (registers fgsm, pgd, mifgsm)
    import medrobust.attacks.sia  # noqa: F401  (registers sia)
    import medrobust.attacks.square  # noqa: F401  (registers square)
