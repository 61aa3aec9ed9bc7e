"""medrobust: how far can a medical image classifier be fooled, what do defenses win back,
and can attacks be detected.

The currency everywhere is a float32 tensor of images in [0, 1], shape (B, C, H, W),
with C = 1 for radiographs. See DESIGN.md in the project root for the rooms and contracts.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
