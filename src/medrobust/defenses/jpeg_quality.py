"""The JPEG quality a defense accepts, checked in one place for the codec and its smooth approximation,
and why both refuse volumes."""

from __future__ import annotations

MIN_QUALITY, MAX_QUALITY = 1, 95
"""Pillow's useful quality range (above 95 it disables parts of the compression)."""

JPEG_VOLUME_REFUSAL = ("JPEG codes 8-bit 2-D images: on CT it would round 4096 HU levels to 256 (16 HU steps) and "
                       "code each slice's blocks alone, which no scanner or PACS does to a CT series; defend volumes "
                       "with tv (3-D, spacing-aware), median or bits")
"""Why JPEG (the codec and its smooth approximation) refuses volumes (B, C, D, H, W)."""


def check_quality(quality: int) -> None:
    if isinstance(quality, bool) or int(quality) != quality or not MIN_QUALITY <= int(quality) <= MAX_QUALITY:
        raise ValueError(f"JPEG quality must be an integer from {MIN_QUALITY} to {MAX_QUALITY} "
                         f"(the study used 50-80), got {quality!r}")
