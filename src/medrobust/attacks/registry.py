"""Attacks by name with typed parameters, so the CLI, config files and the service build
them the same way: ``build_attack("sia", eps="8/255", n_copies=10)`` or
``build_attack("pgd:eps=8/255,steps=20")``."""

from __future__ import annotations

from typing import Any

from medrobust.attacks.engine import Attack
from medrobust.components import ComponentRegistry, parse_spec


def _ensure_builtin() -> None:
    import medrobust.attacks.block_shuffle  # noqa: F401  (registers block-shuffle)
    import medrobust.attacks.gradient_attacks  # noqa: F401  (registers fgsm, pgd, mifgsm)
    import medrobust.attacks.sia  # noqa: F401  (registers sia)
    import medrobust.attacks.square  # noqa: F401  (registers square)


_ATTACKS: ComponentRegistry[Attack] = ComponentRegistry("attack", _ensure_builtin)
register_attack = _ATTACKS.register


def list_attacks(pattern: str = "*") -> list[str]:
    return _ATTACKS.names(pattern)


def attack_parameters(name: str) -> dict[str, tuple[Any, Any]]:
    """``{parameter: (type, default)}`` of attack ``name``'s constructor."""
    return _ATTACKS.parameters(name)


def parse_attack_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"sia:eps=8/255,n_copies=10"`` -> ("sia", {"eps": "8/255", "n_copies": "10"})."""
    return parse_spec(spec, "attack")


def build_attack(spec: str, **params: Any) -> Attack:
    """Build an attack from a name or ``name:key=value,...`` plus keyword parameters (which win)."""
    name, from_spec = parse_attack_spec(spec)
    return _ATTACKS.build(name, {**from_spec, **params})
