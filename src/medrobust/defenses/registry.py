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

from typing import Any

from medrobust.defenses.base import Defense
from medrobust.specs.components import ComponentRegistry, parse_composed_spec

_DEFENSES: ComponentRegistry[Defense] = ComponentRegistry("defense")
register_defense = _DEFENSES.register
"""Class decorator: ``@register_defense("jpeg")`` makes a defense buildable by name. The built-in
defenses register when :mod:`medrobust.defenses` (whose ``__init__`` imports them) is imported."""


def list_defenses(pattern: str = "*") -> list[str]:
    """Registered defense names matching a shell-style ``pattern``, sorted.

    Args:
        pattern: a glob such as ``"t*"``. Default ``"*"``: every defense.

    Returns:
        The matching names, e.g. ``['bits', 'jpeg', 'median', 'none', 'tv', 'tvm']``.
    """
    return _DEFENSES.names(pattern)


def defense_parameters(name: str) -> dict[str, tuple[Any, Any]]:
    """The parameters defense ``name`` accepts, read from its constructor's signature.

    Args:
        name: a registered defense name (``"jpeg"``).

    Returns:
        ``{parameter: (type annotation, default)}``, in signature order; e.g. for ``"jpeg"``
        ``"quality"`` maps to ``(int, 75)``.

    Raises:
        ValueError: ``name`` is not registered (the message lists the known names).
    """
    return _DEFENSES.parameters(name)


def parse_defense_spec(spec: str) -> list[tuple[str, dict[str, str]]]:
    """Split a spec into its members, each a name and its raw parameters (not converted yet).

    Args:
        spec: members joined by ``+``, each ``name`` or ``name:key=value,...``; names are
            lower-cased, dashes in keys become underscores.

    Returns:
        ``[(name, {key: value string}), ...]`` in the order the members are applied.

    Raises:
        ValueError: an empty member, or a parameter that is not ``key=value``.

    Example:

    >>> parse_defense_spec("jpeg:quality=50+tv:weight=0.1")
    [('jpeg', {'quality': '50'}), ('tv', {'weight': '0.1'})]
    """
    return parse_composed_spec(spec, "defense")


def build_defense(spec: str | Defense, **params: Any) -> Defense:
    """Build a defense from a spec; a :class:`Compose` when it has several members.

    Values given as strings are converted to the constructor's declared types (floats accept
    fractions: ``weight=1/10``).

    Args:
        spec: ``"jpeg"``, ``"jpeg:quality=50+tv:weight=0.1"`` (members applied left to right), or
            an already built :class:`~medrobust.defenses.base.Defense`, returned unchanged.
        **params: constructor parameters for a single-member spec; they override the spec's.

    Returns:
        The defense: one member's class, or a :class:`~medrobust.defenses.compose.Compose`.

    Raises:
        ValueError: an empty spec, an unknown name or parameter, a value out of range, keyword
            parameters with a composition, or parameters for an already built defense.

    Example:

    >>> list_defenses()
    ['bits', 'jpeg', 'median', 'none', 'tv', 'tvm']
    >>> hybrid = build_defense("jpeg:quality=50+tv:weight=1/10")  # the study's hybrid defense
    >>> type(hybrid).__name__, hybrid[0].quality, hybrid[1].weight
    ('Compose', 50, 0.1)
    >>> build_defense("median", size=3).size
    3
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
    built = [_DEFENSES.build(name, {**p, **params}) for name, p in members]
    if len(built) == 1:
        return built[0]
    from medrobust.defenses.compose import Compose

    return Compose(built)
