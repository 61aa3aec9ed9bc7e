"""The squeeze detector's squeezers for the run's data: a configuration that names none gets the
defaults of its data's stored grid, decided once the data is listed and before config.yaml is
written, so the run folder says which squeezers ran.

8-bit images keep :data:`~medrobust.detection.squeeze.DEFAULT_SQUEEZERS` (every radiograph run
unchanged); CT (slices and volumes in HU) gets :data:`~medrobust.detection.squeeze.VOLUME_SQUEEZERS`:
JPEG refuses volumes and bit-depth reduction erases HU contrast (the reasons in that constant's
docstring). Squeezers the configuration lists are used as listed.
"""

from __future__ import annotations

import logging

from medrobust.data.stored_grid import StoredGrid
from medrobust.evaluation.config import ExperimentConfig

log = logging.getLogger(__name__)


def squeezers_for_data(config: ExperimentConfig, grid: StoredGrid) -> ExperimentConfig:
    """``config`` with the squeeze detector's squeezers for data on ``grid`` (module docstring):
    itself unless the data is CT and the squeeze detector runs with the squeezers left out."""
    from medrobust.detection.squeeze import VOLUME_SQUEEZERS

    squeeze = config.detectors.squeeze
    if grid.unit != "HU" or squeeze is None or "squeezers" in squeeze.model_fields_set:
        return config
    log.info("squeeze detector on CT data: squeezers %s (JPEG refuses volumes; bit depth erases HU contrast)",
             ", ".join(VOLUME_SQUEEZERS))
    chosen = squeeze.model_copy(update={"squeezers": list(VOLUME_SQUEEZERS)})
    return config.model_copy(update={"detectors": config.detectors.model_copy(update={"squeeze": chosen})})
