"""Budgets stated in HU (``eps: 4HU``) belong to CT data: every budget of a configuration, found
where it is written, and refused with the reason when the run's data is on the 8-bit grid.

A budget in HU is parsed into the currency with the CT grid (:func:`~medrobust.specs.components.parse_number`:
``4HU`` -> 4/4095), and its label says so (``4HU``). On 8-bit data that number would be a quarter
of a grey level, which no PNG can store: nothing the attacker could deliver. So a run checks its
budgets against its data's grid once the data is listed, before any work or file.
"""

from __future__ import annotations

from medrobust.data.stored_grid import StoredGrid
from medrobust.evaluation.config import ExperimentConfig
from medrobust.specs.components import eps_label, is_hu_budget, parse_number


def configured_budgets(config: ExperimentConfig) -> list[tuple[str, float]]:
    """Every L-inf or L2 budget of ``config`` with the field it is written in (``attacks[0].params.eps``)."""
    found: list[tuple[str, float]] = []
    for i, a in enumerate(config.attacks):
        if "eps" in a.params:
            found.append((f"attacks[{i}].params.eps", parse_number(a.params["eps"])))
        found += [(f"attacks[{i}].eps_sweep", e) for e in a.eps_sweep]
    adaptive = config.adaptive
    if "eps" in adaptive.params:
        found.append(("adaptive.params.eps", parse_number(adaptive.params["eps"])))
    found += [("adaptive.eps_sweep", e) for e in adaptive.eps_sweep]
    found += [("grid", e) for e in config.grid or []]
    return found


def check_budget_units(config: ExperimentConfig, grid: StoredGrid, source: str) -> None:
    """Refuse budgets in HU when the data (``source``) is not CT: ValueError naming the field,
    the budget and the fix."""
    for where, eps in configured_budgets(config):
        refuse_hu_budget(where, eps, grid, source)


def refuse_hu_budget(where: str, eps: float, grid: StoredGrid, source: str) -> None:
    """ValueError when ``eps`` is stated in HU and the data (``source``) is not on the CT grid."""
    if grid.unit != "HU" and is_hu_budget(eps):
        raise ValueError(f"{where}: the budget {eps_label(eps)} is in HU, but {source} holds {grid.name} images "
                         f"(budgets in {grid.unit}); give it in grey levels (e.g. 4/255), or point at CT data "
                         "(DICOM series, NIfTI or CT slices; tensors with mr.open_images(x, grid='CT'))")
