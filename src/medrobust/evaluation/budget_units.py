"""Budgets stated in HU (``eps: 4HU``) belong to CT data: every budget of a configuration, found
where it is written, and refused with the reason when the run's data is on the 8-bit grid.

A budget in HU is parsed into the currency with the CT grid (:func:`~medrobust.specs.components.parse_number`:
``4HU`` -> 4/4095), and its label says so (``4HU``). On 8-bit data that number would be a quarter
of a grey level, which no PNG can store: nothing the attacker could deliver. So a run checks its
budgets against its data's grid once the data is listed, before any work or file.
"""

from __future__ import annotations

from typing import Any

from medrobust.data.stored_grid import CT_HU, StoredGrid
from medrobust.evaluation.config import ExperimentConfig
from medrobust.models.intensity import HUWindows
from medrobust.specs.components import eps_label, is_hu_budget, parse_number

MASKING_SHARE = 64 / 255
"""The gradient-masking check's large budget as a share of the intensity range the model sees:
64/255 of an 8-bit image's grey levels (Carlini et al. 2019, "On evaluating adversarial
robustness", sec. 5: at a budget this large accuracy should fall to 0%)."""


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


def masking_budget_for_data(config: ExperimentConfig, grid: StoredGrid, intensity: Any) -> ExperimentConfig:
    """``config`` with the gradient-masking check's large budget for the model and data: on CT with a
    windowed model, and ``adaptive.masking_eps`` not given, :data:`MASKING_SHARE` of the widest
    window's width; otherwise ``config`` itself. Decided once the data is listed and before
    config.yaml is written, so the run folder says which budget the check ran at.

    A CT model sees its windows, not the stored range: 64/255 of 4,095 HU is 1,028 HU, thirteen
    brain windows (80 HU) wide, where every voxel a step moves leaves the window, its gradient is
    zero and a gradient attack stalls. On the CT demo the check read "accuracy stays at 29.2% at
    eps 1027.76 HU" for a defense the same attack brings to 0% at 4 HU and above (and to 0% at
    20 or 50 HU): an artifact of the clipping, not of the defense. At 64/255 of the widest window
    (50.2 HU for 40/80 and 80/200) the check asks of a CT model what it asks of an 8-bit image.

    Args:
        config: the configuration.
        grid: the data's stored grid.
        intensity: the model's intensity convention (an :class:`~medrobust.models.intensity.HUWindows`
            on windowed CT; anything else leaves the budget as configured).

    Returns:
        The configuration, its ``adaptive.masking_eps`` chosen.

    >>> from medrobust.data.stored_grid import EIGHT_BIT
    >>> brain = HUWindows(((40.0, 80.0), (80.0, 200.0)))
    >>> ct = masking_budget_for_data(ExperimentConfig(), CT_HU, brain)
    >>> round(CT_HU.eps_in_units(ct.adaptive.masking_eps), 1), "masking_eps" in ct.adaptive.model_fields_set
    (50.2, True)
    >>> masking_budget_for_data(ExperimentConfig(), EIGHT_BIT, brain).adaptive.masking_eps == 64 / 255
    True
    """
    adaptive = config.adaptive
    if grid.unit != "HU" or not isinstance(intensity, HUWindows) or "masking_eps" in adaptive.model_fields_set:
        return config
    widest = max(width for _, width in intensity.windows)
    chosen = adaptive.model_copy(update={"masking_eps": CT_HU.eps_from_units(MASKING_SHARE * widest)})
    chosen.model_fields_set.add("masking_eps")  # decided: a resumed run reads it from config.yaml as given
    return config.model_copy(update={"adaptive": chosen})
