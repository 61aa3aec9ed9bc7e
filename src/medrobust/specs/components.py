"""Named components with typed parameters, built from one-line specs.

Models, attacks, defenses and detectors are all registered the same way, and all but models
are built the same way from the CLI, config files and the service: a name plus ``key=value``
parameters, e.g. ``"pgd:eps=8/255,steps=20"``.

A :class:`ComponentRegistry` holds the components of one kind, after timm's ``_registry``: a
``register(name, **metadata)`` decorator over a class (or a builder function) and
``names(pattern)`` to list them. A registry imports nothing: the package of each kind imports
its implementation modules in its ``__init__``, and their decorators fill its registry. So a
registry is complete as soon as anything of its package is imported (Python runs the
package's ``__init__`` first), and there is no import cycle (the registry module never imports
the modules it lists)::

    attacks/registry.py      _ATTACKS = ComponentRegistry("attack"); register_attack = _ATTACKS.register
    attacks/sia.py           @register_attack("sia") class SIA(...)
    attacks/__init__.py      from medrobust.attacks.sia import SIA   # registers "sia"

A package whose ``__init__`` must stay cheap (:mod:`medrobust.models`: its model contract is
built in processes that never import torch) names the module of its built-ins instead,
``ComponentRegistry("architecture", builtins="medrobust.models.zoo")``, and the registry imports
it by name on its first lookup.

Each class's constructor signature (its type hints and defaults) says which parameters exist
and how a string from the command line converts: numbers accept fractions (``8/255``),
booleans ``true/false/1/0``, lists are ``;``-separated, ``none`` gives None where the type
allows it. This module imports nothing heavy (no torch), so ``import medrobust`` stays cheap.
"""

from __future__ import annotations

import collections.abc
import fnmatch
import importlib
import inspect
import math
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Generic, TypeVar

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


HU_LEVELS = 4095
"""Steps of the CT grid from 0 to 1 (:data:`~medrobust.data.stored_grid.CT_HU`: 1 HU = 1/4095)."""
_HU_SUFFIX = re.compile(r"^\s*(?P<amount>[^a-zA-Z]+?)\s*hu\s*$", re.IGNORECASE)


def eps_label(eps: float) -> str:
    """8/255 for budgets on the grey-level grid; ``4HU`` for a whole (or tenth) number of HU on the
    CT grid (eps = 4/4095) that is no grey level and no plain decimal; else the fraction (0.5/255 is
    ``1/510``: the label and stage folder medrobust has always written for it, so such a run folder
    still resumes). Labels are stage keys: stable, and distinct for distinct budgets."""
    levels = eps * 255
    if abs(levels - round(levels)) < 1e-6:
        return f"{round(levels)}/255"
    hu = eps * HU_LEVELS
    if abs(hu * 10 - round(hu * 10)) < 1e-6 and abs(eps * 1000 - round(eps * 1000)) > 1e-9:
        return f"{round(hu, 1):g}HU"
    return f"{Fraction(eps).limit_denominator(1000)}" if eps else "0"


def is_hu_budget(eps: float) -> bool:
    """Whether a budget is stated in HU (its :func:`eps_label` ends in ``HU``): a CT budget."""
    return eps_label(eps).endswith("HU")


def eps_text(eps: float, unit: str = "grey levels") -> str:
    """A budget as a person reads it in the data's ``unit``: ``8/255`` (grey levels, as always) or
    ``4 HU`` (CT: ``4095 eps`` HU; ``128.47 HU`` for 8/255 on the CT grid)."""
    if unit == "HU":
        hu = eps * HU_LEVELS
        return f"{round(hu, 1):g} HU" if abs(hu * 10 - round(hu * 10)) < 1e-6 else f"{hu:.2f} HU"
    return eps_label(eps)


MAX_SEED = 2**32 - 1
"""The largest seed accepted anywhere (configuration, component parameters): numpy's and torch's
generators take every seed from 0 to here, with room for the offsets a run adds per batch."""


def parse_number(value: str | float | int) -> float:
    """``"8/255"`` -> 0.03137..., ``"0.5/255"`` -> 0.00196..., ``"0.1"`` -> 0.1, numbers unchanged;
    a budget in Hounsfield units, ``"4HU"`` or ``"4 HU"``, -> 4/4095 (the CT grid's currency; a run on
    8-bit data refuses it); NaN and infinity (``.nan`` in YAML, ``"inf"``) are refused: no setting
    means anything with them."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif _HU_SUFFIX.match(str(value)):
        number = _hu_budget(str(value))
    else:
        text = str(value).strip()
        try:
            if "/" in text:
                numerator, denominator = text.split("/")
                number = float(Fraction(numerator.strip()) / Fraction(denominator.strip()))
            else:
                number = float(text)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{value!r} is not a number; write e.g. 8/255 or 0.03") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number; write e.g. 8/255 or 0.03")
    return number


def _hu_budget(text: str) -> float:
    """``"4HU"`` -> 4/4095: a whole or tenth number of HU from 0 to 4095."""
    match = _HU_SUFFIX.match(text)
    assert match is not None
    try:
        amount = float(Fraction(match["amount"].strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a budget in HU; write e.g. 4HU") from None
    if not 0 <= amount <= HU_LEVELS or abs(amount * 10 - round(amount * 10)) > 1e-9:
        raise ValueError(f"{text!r}: a budget in HU is a number from 0 to {HU_LEVELS} in steps of 0.1; write e.g. 4HU")
    return float(Fraction(round(amount * 10), 10 * HU_LEVELS))


def check_seed(value: int, what: str | None = None) -> int:
    """``value`` when it is a seed numpy and torch both take (0 to :data:`MAX_SEED`), else a
    ValueError that starts with ``what`` (what the value is) when given."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        subject = f"{what} {value!r}" if what else repr(value)
        raise ValueError(f"{subject} is not a seed: give a whole number from 0 to {MAX_SEED:,} (2**32 - 1)")
    return value


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


_MEMBER_SPLIT = re.compile(r"\+(?!\d)")  # "+" joins members; in "1e+3" it is part of a number


def parse_composed_spec(spec: str, kind: str) -> list[tuple[str, dict[str, str]]]:
    """``"jpeg:quality=50+tv:weight=0.1"`` -> [("jpeg", {"quality": "50"}), ("tv", {"weight": "0.1"})]:
    members joined by ``+`` (a defense composition), each a :func:`parse_spec`; names lower-cased."""
    members = []
    for part in _MEMBER_SPLIT.split(spec.strip()):
        name, params = parse_spec(part, kind)
        if not name:
            raise ValueError(f"{kind} spec {spec!r} has an empty member; write e.g. jpeg:quality=50+tv")
        members.append((name.lower(), params))
    return members


_TARGETS: dict[str, Any] = {"bool": bool, "int": int, "float": float, "list": list[str], "str": str}


def parameter_conversion(annotation: Any) -> tuple[str, bool]:
    """How :func:`_convert` reads a string for a parameter declared ``annotation``: its target
    (``"bool"``, ``"int"``, ``"float"``, ``"list"`` or ``"str"``) and whether ``none`` gives None.

    A plain pair of names, so that a parameter's conversion can be written down without its type
    (the torch-free catalogue of components, :mod:`medrobust.layer.component_catalogue`), and
    read back by :func:`conversion_annotation`."""
    args = typing.get_args(annotation)
    base = [a for a in args if a is not type(None)] if args else [annotation]
    target = base[0] if base else str
    optional = type(None) in args
    if target is bool or target is int or target is float:
        return target.__name__, optional
    if typing.get_origin(target) in (list, tuple, collections.abc.Sequence) or target in (list, tuple):
        return "list", optional
    return "str", optional


def conversion_annotation(conversion: tuple[str, bool]) -> Any:
    """An annotation :func:`_convert` reads as ``conversion`` (:func:`parameter_conversion`'s inverse)."""
    target, optional = conversion
    return _TARGETS[target] | None if optional else _TARGETS[target]


def checked_parameters(kind: str, name: str, annotations: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` of component ``name`` of ``kind`` converted to the types ``annotations``
    ({parameter: annotation}) declare; ValueError naming an unknown parameter or a value that
    does not convert. :meth:`ComponentRegistry.build` and the torch-free checks of a spec share it."""
    unknown = sorted(set(params) - set(annotations))
    if unknown:
        takes = ", ".join(annotations) or "no parameters"
        raise ValueError(f"{kind} {name}: unknown parameter(s) {unknown}; it takes {takes}")
    return {k: _convert(kind, name, k, v, annotations[k]) for k, v in params.items()}


def _convert(kind: str, name: str, key: str, value: Any, annotation: Any) -> Any:
    """A command-line string to the parameter's declared type (other values pass unchanged); a
    number that is NaN or infinite, or a seed numpy and torch do not take, is refused."""
    converted = _from_text(kind, name, key, value, annotation) if isinstance(value, str) else value
    if isinstance(converted, float) and not math.isfinite(converted):
        raise ValueError(f"{kind} {name}: parameter {key}={value!r} is not a finite number; write e.g. 8/255 or 0.03")
    if key == "seed" and converted is not None:
        check_seed(converted, f"{kind} {name}: parameter seed")
    return converted


def _from_text(kind: str, name: str, key: str, value: str, annotation: Any) -> Any:
    args = typing.get_args(annotation)
    base = [a for a in args if a is not type(None)] if args else [annotation]
    target = base[0] if base else str
    text = value.strip()
    if type(None) in args and text.lower() in ("none", "null", ""):
        return None
    if target is float:
        try:
            return parse_number(text)
        except ValueError as err:  # "'nan' is not a finite number; ..." after the parameter's name
            raise ValueError(f"{kind} {name}: parameter {key}={err}") from None
    try:
        if target is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if target is int:
            return int(text)
        if typing.get_origin(target) in (list, tuple, collections.abc.Sequence) or target in (list, tuple):
            return [t for t in (s.strip() for s in text.split(";")) if t]
    except ValueError:
        type_name = getattr(target, "__name__", str(target))
        raise ValueError(f"{kind} {name}: parameter {key}={value!r} is not a valid {type_name}") from None
    return text


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    """One registered component: its ``name``, the ``factory`` that builds it (a class or a
    function) and the ``metadata`` given to ``register`` (read-only)."""

    name: str
    factory: Callable[..., T]
    metadata: Mapping[str, Any]


class ComponentRegistry(Generic[T]):
    """The components of one ``kind`` ("attack", "defense", "detector", "architecture"), by name.

    ``register(name, **metadata)`` is a decorator over a class or a builder function (a class
    also gets ``name`` as its ``name`` attribute); the keyword ``metadata`` is kept with the
    entry (e.g. an architecture's description and input channels). See the module docstring
    for how a package fills its registry.

    Example:

    >>> shapes = ComponentRegistry("shape")
    >>> @shapes.register("square", corners=4)
    ... class Square:
    ...     def __init__(self, side: float = 1.0) -> None:
    ...         self.side = side
    >>> shapes.names(), shapes.metadata("square")["corners"], Square.name
    (['square'], 4, 'square')
    >>> shapes.build("square", {"side": "3/4"}).side
    0.75
    """

    def __init__(self, kind: str, builtins: str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, RegistryEntry[T]] = {}
        self._builtins = builtins

    def _known(self) -> dict[str, RegistryEntry[T]]:
        """The entries, once the module of the built-in components (``builtins``, for a package
        whose ``__init__`` imports nothing) has been imported and has registered them."""
        module = self._builtins
        if module is not None:
            self._builtins = None  # its decorators register through here: import it once
            try:
                importlib.import_module(module)
            except BaseException:
                self._builtins = module
                raise
        return self._entries

    def register(self, name: str, **metadata: Any) -> Callable[[F], F]:
        """Decorator: make a class or builder function buildable by ``name``, with ``metadata``."""

        def wrap(factory: F) -> F:
            existing = self._entries.get(name)
            if existing is not None and existing.factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered (by {existing.factory.__name__})")
            if isinstance(factory, type):
                factory.name = name  # type: ignore[attr-defined]
            self._entries[name] = RegistryEntry(name, factory, MappingProxyType(dict(metadata)))
            return factory

        return wrap

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern`` (``"t*"``), sorted."""
        return sorted(n for n in self._known() if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._known()

    def entry(self, name: str) -> RegistryEntry[T]:
        """The entry of ``name``; a clear error naming the known ones if there is none."""
        entries = self._known()
        try:
            return entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(entries))}") from None

    def get(self, name: str) -> Callable[..., T]:
        """The class (or builder function) registered as ``name``."""
        return self.entry(name).factory

    def metadata(self, name: str) -> Mapping[str, Any]:
        """The keyword metadata ``name`` was registered with (read-only)."""
        return self.entry(name).metadata

    def parameters(self, name: str) -> dict[str, tuple[Any, Any]]:
        """``{parameter: (type, default)}`` of ``name``'s constructor (or builder function)."""
        factory = self.get(name)
        function = factory.__init__ if isinstance(factory, type) else factory
        hints = typing.get_type_hints(function)
        out: dict[str, tuple[Any, Any]] = {}
        for pname, p in inspect.signature(function).parameters.items():
            if pname == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[pname] = (hints.get(pname, Any), p.default)
        return out

    def conversions(self, name: str) -> dict[str, tuple[str, bool]]:
        """``{parameter: (target, accepts None)}`` of ``name`` (:func:`parameter_conversion`)."""
        return {k: parameter_conversion(t) for k, (t, _default) in self.parameters(name).items()}

    def build(self, name: str, params: dict[str, Any]) -> T:
        """An instance of ``name`` with ``params`` converted to the constructor's types."""
        annotations = {k: t for k, (t, _default) in self.parameters(name).items()}
        return self.get(name)(**checked_parameters(self.kind, name, annotations, params))
