"""Option values that several commands turn into settings the same way: ``--class-map`` pairs and
``--ray`` / ``--workers``."""

from __future__ import annotations


def execution_section(ray: str | None, workers: int | None) -> dict:
    """The configuration's ``execution`` from ``--ray [ADDRESS]`` and ``--workers``."""
    from medrobust.evaluation.config import check_ray_address

    if ray is None:
        raise ValueError("--workers sets the number of Ray workers: add --ray (or --ray ADDRESS)")
    return {"engine": "ray", "address": check_ray_address(ray), "workers": workers}


def parse_class_map(items: list[str]) -> dict[str, str]:
    """``["NORMAL=Normal", "PNEU=Pneumonia"]`` -> {"NORMAL": "Normal", "PNEU": "Pneumonia"}."""
    from medrobust.layer.image_folders import parse_class_map as parse_pairs

    return parse_pairs(items, "--class-map")
