"""Attacks by name with typed parameters, so the CLI, config files and the service build
them the same way: ``build_attack("sia", eps="8/255", n_copies=10)`` or
``build_attack("pgd:eps=8/255,steps=20")``.

The attack classes register themselves with :func:`register_attack`; the package's
``__init__`` imports them, so the registry is complete whenever this module is importable."""

from __future__ import annotations

from typing import Any

from medrobust.attacks.engine import Attack
from medrobust.specs.components import ComponentRegistry, parse_spec
from medrobust.specs.eps_limit import check_eps_limit

_ATTACKS: ComponentRegistry[Attack] = ComponentRegistry("attack")
register_attack = _ATTACKS.register
"""Class decorator: ``@register_attack("sia")`` makes an attack buildable by name. The built-in
attacks register when :mod:`medrobust.attacks` (whose ``__init__`` imports them) is imported."""


def list_attacks(pattern: str = "*") -> list[str]:
    """Registered attack names matching a shell-style ``pattern``, sorted.

    Args:
        pattern: a glob such as ``"*gsm"``. Default ``"*"``: every attack.

    Returns:
        The matching names, e.g. ``['apgd', 'autoattack', 'block-shuffle', 'fgsm', 'mifgsm', 'pgd', 'sia', 'square']``.
    """
    return _ATTACKS.names(pattern)


def attack_parameters(name: str) -> dict[str, tuple[Any, Any]]:
    """The parameters attack ``name`` accepts, read from its constructor's signature.

    Args:
        name: a registered attack name (``"pgd"``).

    Returns:
        ``{parameter: (type annotation, default)}``, in signature order; e.g. for ``"pgd"``
        ``"eps"`` maps to ``(float, 8/255)``.

    Raises:
        ValueError: ``name`` is not registered (the message lists the known names).
    """
    return _ATTACKS.parameters(name)


def parse_attack_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split a spec into its name and its raw parameters (not converted yet).

    Args:
        spec: ``name`` or ``name:key=value,...``; dashes in keys become underscores.

    Returns:
        ``(name, {key: value string})``.

    Raises:
        ValueError: a parameter is not ``key=value``.

    Example:

    >>> parse_attack_spec("sia:eps=8/255,n-copies=10")
    ('sia', {'eps': '8/255', 'n_copies': '10'})
    """
    return parse_spec(spec, "attack")


def build_attack(spec: str, allow_large_eps: bool = False, **params: Any) -> Attack:
    """Build an attack from a name or ``name:key=value,...`` plus keyword parameters (which win).

    Values given as strings are converted to the constructor's declared types (numbers accept
    fractions such as ``8/255``; booleans ``true/false/1/0``; lists are ``;``-separated).

    Args:
        spec: ``"pgd"`` or ``"pgd:eps=8/255,steps=20"``; see :func:`list_attacks` for the names.
        allow_large_eps: build an L-inf budget above :data:`MAX_EPS` (64/255), beyond which the
            result is a visibly different image rather than a perturbation. Default False.
        **params: constructor parameters; they override the spec's.

    Returns:
        The attack, ready to call as ``attack(model, x, y)``.

    Raises:
        ValueError: an unknown name or parameter, a value that does not convert or is out of
            range, or an L-inf ``eps`` above 64/255 without ``allow_large_eps``.

    Example:

    >>> list_attacks()
    ['apgd', 'autoattack', 'block-shuffle', 'fgsm', 'mifgsm', 'pgd', 'sia', 'square']
    >>> attack = build_attack("pgd:eps=8/255,steps=20", alpha=1 / 255)
    >>> type(attack).__name__, attack.steps, round(attack.eps * 255), round(attack.alpha * 255)
    ('PGD', 20, 8, 1)
    """
    name, from_spec = parse_attack_spec(spec)
    attack = _ATTACKS.build(name, {**from_spec, **params})
    check_eps_limit(name, getattr(attack, "eps", None), getattr(attack, "norm", "linf"), allow_large_eps)
    return attack
