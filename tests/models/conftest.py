"""Test configuration for the models room.

Keras picks its backend once, at import: medrobust runs Keras models on the torch backend,
so it is chosen here, before any test imports Keras.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
