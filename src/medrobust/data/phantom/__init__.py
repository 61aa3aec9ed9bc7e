"""Synthetic chest radiographs (phantoms): the embedded default dataset.

Frontal chest X-rays of three classes with the visual signs of the real findings:
Normal, Pneumonia (consolidation) and Pneumothorax (pleural line with a hyperlucent rim
devoid of lung markings), with patient-level variation so a classifier has to learn the
signs. Deterministic under a seed; any size from 32 to 512 px.
"""

from medrobust.data.phantom.dataset import (
    PhantomDataset,
    generate_phantom,
    phantom_params,
)
from medrobust.data.phantom.params import PHANTOM_CLASSES, PhantomParams, sample_params
from medrobust.data.phantom.render import render_phantom

__all__ = [
    "PHANTOM_CLASSES",
    "PhantomDataset",
    "PhantomParams",
    "generate_phantom",
    "phantom_params",
    "render_phantom",
    "sample_params",
]
