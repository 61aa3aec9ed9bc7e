"""Named components with typed parameters, built from one-line specs.

Attacks, defenses and detectors are all built the same way from the CLI, config files and
(later) the service: a name plus ``key=value`` parameters, e.g. ``"pgd:eps=8/255,steps=20"``.
A :class:`ComponentRegistry` holds the classes of one kind; each class's constructor
signature (its type hints and defaults) says which parameters exist and how a string from
the command line converts: numbers accept fractions (``8/255``), booleans ``true/false/1/0``,
lists are ``;``-separated, ``none`` gives None where the type allows it.
"""

from __future__ import annotations

import collections.abc
import fnmatch
import inspect
import typing
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def parse_number(value: str | float | int) -> float:
    """``"8/255"`` -> 0.03137..., ``"0.1"`` -> 0.1, numbers unchanged."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{value!r} is not a number; write e.g. 8/255 or 0.03") from None


def parse_spec(spec: str, kind: str) -> tuple[str, dict[str, str]]:
    """``"sia:eps=8/255,n_copies=10"`` -> ("sia", {"eps": "8/255", "n_copies": "10"})."""
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        if "=" not in part:
            raise ValueError(f"{kind} parameter {part!r} must look like key=value (e.g. {name.strip()}:eps=8/255)")
        key, value = part.split("=", 1)
        params[key.strip().replace("-", "_")] = value.strip()
    return name.strip(), params


def _convert(kind: str, name: str, key: str, value: Any, annotation: Any) -> Any:
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
        if typing.get_origin(target) in (list, tuple, collections.abc.Sequence) or target in (list, tuple):
            return [t for t in (s.strip() for s in text.split(";")) if t]
    except ValueError:
        type_name = getattr(target, "__name__", str(target))
        raise ValueError(f"{kind} {name}: parameter {key}={value!r} is not a valid {type_name}") from None
    return text


class ComponentRegistry(Generic[T]):
    """The classes of one kind of component (``kind``: "attack", "defense", ...), by name.

    ``load_builtin`` imports the modules whose decorators register the built-in classes; it
    runs on first use, so importing the registry stays cheap.
    """

    def __init__(self, kind: str, load_builtin: Callable[[], None]) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}
        self._load_builtin = load_builtin
        self._loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: make a class buildable by ``name`` (and set its ``name`` attribute)."""

        def wrap(cls: type[T]) -> type[T]:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered (by {self._classes[name].__name__})")
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return wrap

    def _ensure(self) -> None:
        if not self._loaded:
            self._loaded = True
            self._load_builtin()

    def names(self, pattern: str = "*") -> list[str]:
        self._ensure()
        return sorted(n for n in self._classes if fnmatch.fnmatch(n, pattern))

    def get(self, name: str) -> type[T]:
        self._ensure()
        try:
            return self._classes[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._classes))}") from None

    def parameters(self, name: str) -> dict[str, tuple[Any, Any]]:
        """``{parameter: (type, default)}`` of ``name``'s constructor."""
        cls = self.get(name)
        hints = typing.get_type_hints(cls.__init__)
        out: dict[str, tuple[Any, Any]] = {}
        for pname, p in inspect.signature(cls.__init__).parameters.items():
            if pname == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[pname] = (hints.get(pname, Any), p.default)
        return out

    def build(self, name: str, params: dict[str, Any]) -> T:
        """An instance of ``name`` with ``params`` converted to the constructor's types."""
        signature = self.parameters(name)
        unknown = sorted(set(params) - set(signature))
        if unknown:
            takes = ", ".join(signature) or "no parameters"
            raise ValueError(f"{self.kind} {name}: unknown parameter(s) {unknown}; it takes {takes}")
        kwargs = {k: _convert(self.kind, name, k, v, signature[k][0]) for k, v in params.items()}
        return self.get(name)(**kwargs)
