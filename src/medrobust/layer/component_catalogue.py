"""The built-in attacks, defenses and detectors by name, with their parameters, readable without
torch: what a face checks a configuration's component specs against before any model is loaded.

The service's web process never imports torch (its attack and defense classes do), yet a
configuration with ``attacks: [{name: pgd, params: {stpes: 10}}]`` must be refused there, with
the field named, and not by a worker after the job waited in the queue. So the registries'
names and how each parameter converts (:func:`medrobust.specs.components.parameter_conversion`) are
written down in ``component_catalogue.json`` beside this module, and
:func:`check_attack_spec` / :func:`check_defense_spec` check a spec with the same parsing,
conversion and messages as building it (:func:`medrobust.attacks.registry.build_attack`), without
building it. What only a constructor checks (a range, an enumerated name such as ``norm``) is
checked when the worker builds the spec, in the job's first seconds.

The file is generated from the live registries: ``python -m medrobust.layer.component_catalogue``
rewrites it, and a test fails when it differs from them (a component added or changed without
regenerating it).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from medrobust.specs.components import checked_parameters, conversion_annotation, parse_composed_spec, parse_spec
from medrobust.specs.eps_limit import check_eps_limit

CATALOGUE_FILE = Path(__file__).with_name("component_catalogue.json")


@cache
def catalogue() -> dict[str, dict[str, dict[str, list[Any]]]]:
    """``{kind: {name: {parameter: [target, accepts None, default]}}}`` of the built-in components
    (the default is None where it is not a plain JSON value)."""
    return json.loads(CATALOGUE_FILE.read_text(encoding="utf-8"))


def _annotations(kind: str, name: str) -> dict[str, Any]:
    """``{parameter: annotation}`` of component ``name``, rebuilt from the catalogue."""
    entries = catalogue()[kind]
    if name not in entries:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(entries))}")
    return {key: conversion_annotation((target, optional)) for key, (target, optional, _default) in entries[name].items()}


def check_attack_spec(spec: str, allow_large_eps: bool = False, **params: Any) -> dict[str, Any]:
    """Check an attack spec as :func:`~medrobust.attacks.registry.build_attack` would read it (the
    name, each parameter's name and type, the budget limit), without building it; returns the
    parameters, converted. ValueError with the registry's sentence."""
    name, from_spec = parse_spec(spec, "attack")
    converted = checked_parameters("attack", name, _annotations("attack", name), {**from_spec, **params})
    defaults = {key: default for key, (_t, _o, default) in catalogue()["attack"][name].items()}
    check_eps_limit(name, converted.get("eps", defaults.get("eps")), converted.get("norm", defaults.get("norm")),
                    allow_large_eps)
    return converted


def check_defense_spec(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """Check a defense spec (``"jpeg:quality=50+tv"``) as
    :func:`~medrobust.defenses.registry.build_defense` would read it, without building it; returns
    its members with their converted parameters."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a defense spec is a non-empty string such as 'jpeg+tv', got {spec!r}")
    return [(name, checked_parameters("defense", name, _annotations("defense", name), params))
            for name, params in parse_composed_spec(spec, "defense")]


def catalogue_from_registries() -> dict[str, dict[str, dict[str, list[Any]]]]:
    """The catalogue as the live registries give it (imports torch): what the JSON file must hold."""
    from medrobust.attacks.registry import _ATTACKS
    from medrobust.defenses.registry import _DEFENSES
    from medrobust.detection.registry import _DETECTORS

    def plain(value: Any) -> Any:
        return value if value is None or isinstance(value, (bool, int, float, str)) else None

    out: dict[str, dict[str, dict[str, list[Any]]]] = {}
    for registry in (_ATTACKS, _DEFENSES, _DETECTORS):
        out[registry.kind] = {
            name: {key: [*registry.conversions(name)[key], plain(default)]
                   for key, (_type, default) in registry.parameters(name).items()}
            for name in registry.names()}
    return out


def write_catalogue() -> Path:
    """Rewrite ``component_catalogue.json`` from the live registries."""
    kinds = catalogue_from_registries()
    lines = ",\n".join(
        f"  {json.dumps(kind)}: {{\n" + ",\n".join(f"    {json.dumps(name)}: {json.dumps(params)}"
                                                  for name, params in sorted(entries.items())) + "\n  }"
        for kind, entries in sorted(kinds.items()))
    CATALOGUE_FILE.write_text("{\n" + lines + "\n}\n", encoding="utf-8")
    catalogue.cache_clear()
    return CATALOGUE_FILE


if __name__ == "__main__":
    print(write_catalogue())
