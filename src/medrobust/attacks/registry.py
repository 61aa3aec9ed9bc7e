"""Attacks by name with typed parameters, so the CLI, config files and the service build
them the same way: ``build_attack("sia", eps="8/255", n_copies=10)`` or
``build_attack("pgd:eps=8/255,steps=20")``.

The attack classes register themselves with :func:`register_attack`; the package's
``__init__`` imports them, so the registry is complete whenever this module is importable."""

from __future__ import annotations

from typing import Any

from medrobust.attacks.engine import Attack
from medrobust.components import ComponentRegistry, parse_spec
from medrobust.eps_limit import check_eps_limit

_ATTACKS: ComponentRegistry[Attack] = ComponentRegistry("attack")
register_attack = _ATTACKS.register
"""Class decorator: ``@register_attack("sia")`` makes an attack buildable by name. The built-in
attacks register when :mod:`medrobust.attacks` (whose ``__init__`` imports them) is imported."""


def list_attacks(pattern: str = "*") -> list[str]:
    """Registered attack names matching a shell-style ``pattern``, sorted."""
    return _ATTACKS.names(pattern)


def attack_parameters(name: str) -> dict[str, tuple[Any, Any]]:
    """``{parameter: (type, default)}`` of attack ``name``'s constructor."""
    return _ATTACKS.parameters(name)


def parse_attack_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"sia:eps=8/255,n_copies=10"`` -> ("sia", {"eps": "8/255", "n_copies": "10"})."""
    return parse_spec(spec, "attack")


def build_attack(spec: str, allow_large_eps: bool = False, **params: Any) -> Attack:
    """Build an attack from a name or ``name:key=value,...`` plus keyword parameters (which win).

    An L-inf budget above :data:`MAX_EPS` (64/255) is refused unless ``allow_large_eps``.

    Example:

    >>> list_attacks()
    ['block-shuffle', 'fgsm', 'mifgsm', 'pgd', 'sia', 'square']
    >>> attack = build_attack("pgd:eps=8/255,steps=20", alpha=1 / 255)
    >>> type(attack).__name__, attack.steps, round(attack.eps * 255), round(attack.alpha * 255)
    ('PGD', 20, 8, 1)
    """
    name, from_spec = parse_attack_spec(spec)
    attack = _ATTACKS.build(name, {**from_spec, **params})
    check_eps_limit(name, getattr(attack, "eps", None), getattr(attack, "norm", "linf"), allow_large_eps)
    return attack
