"""The JPEG quality a defense accepts, checked in one place for the codec and its smooth approximation."""

from __future__ import annotations

MIN_QUALITY, MAX_QUALITY = 1, 95
"""Pillow's useful quality range (above 95 it disables parts of the compression)."""


def check_quality(quality: int) -> None:
    if isinstance(quality, bool) or int(quality) != quality or not MIN_QUALITY <= int(quality) <= MAX_QUALITY:
        raise ValueError(f"JPEG quality must be an integer from {MIN_QUALITY} to {MAX_QUALITY} "
                         f"(the study used 50-80), got {quality!r}")
