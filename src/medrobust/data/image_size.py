"""The image size a model's contract declares (``input_size``), checked wherever it is declared.

A model's input size comes from the user (``--input-size``, ``model.load.input_size``,
``input_size=`` in Python, the service form), from a Keras or ONNX file, or from a checkpoint's
model.json, and every image is resized to it before the model sees it. A side of 0 or less
names no image, and a size beyond what the readers accept
(:data:`~medrobust.data.decoded_pixels.DEFAULT_MAX_PIXELS`) would have every radiograph blown up to
gigabytes: either would otherwise surface much later, as a tensor error, a failed allocation
or a run that seems to hang. :func:`check_input_size` refuses them where they are declared,
before any image is read. No torch here: the configuration's schema uses it too.

A volume model (CT, MRI: inputs (B, C, D, H, W)) states its size with three numbers,
``[depth, height, width]`` (``input_size: [16, 64, 64]``): the one spelling of a 3-D size, read by
the same function, so two numbers or one always mean an image and three always a volume. Its
voxels are limited as the volume readers limit them
(:data:`~medrobust.data.ct_volume.MAX_VOXELS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from medrobust.data.ct_volume import MAX_VOXELS
from medrobust.data.decoded_pixels import DEFAULT_MAX_PIXELS

MAX_INPUT_SIDE = math.isqrt(DEFAULT_MAX_PIXELS)
"""The longest side of a square input size: its pixels stay within the readers' limit."""


def check_input_size(value: int | Sequence[int] | None) -> tuple[int, ...] | None:
    """``value`` (None: any size; a side; (height, width); or a volume's (depth, height, width))
    as (height, width) or (depth, height, width), or ValueError.

    Each side must be a whole number of at least 1 pixel, and height x width at most the
    readers' limit of :data:`~medrobust.data.decoded_pixels.DEFAULT_MAX_PIXELS` pixels (depth x
    height x width at most :data:`~medrobust.data.ct_volume.MAX_VOXELS` voxels).

    >>> check_input_size(224), check_input_size([150, 200]), check_input_size(None)
    ((224, 224), (150, 200), None)
    >>> check_input_size([16, 64, 64])  # a volume: depth, height, width
    (16, 64, 64)
    >>> check_input_size(0)
    Traceback (most recent call last):
    ...
    ValueError: input size 0 is not an image size: give the side in pixels the model takes, a whole number from 1 ...
    """
    if value is None:
        return None
    sides = [value, value] if _is_number(value) else list(value) if isinstance(value, Sequence) else None
    if sides is None or len(sides) not in (2, 3) or not all(_is_whole(s) for s in sides):
        raise _refused(value)
    size = tuple(int(s) for s in sides)  # type: ignore[arg-type]
    if min(size) < 1 or math.prod(size) > (DEFAULT_MAX_PIXELS if len(size) == 2 else MAX_VOXELS):
        raise _refused(value)
    return size


def parse_input_size(text: str) -> tuple[int, ...] | None:
    """An input size written as text (a command-line flag, a form field): ``224``, ``150,200``
    or a volume's ``8,32,32`` (``x`` separates too: ``8x32x32``), checked by
    :func:`check_input_size`; empty text is None (not given).

    >>> parse_input_size("224"), parse_input_size("8, 32, 32"), parse_input_size("150x200")
    ((224, 224), (8, 32, 32), (150, 200))
    """
    parts = [p.strip() for p in text.lower().replace("x", ",").split(",")]
    if parts == [""]:
        return None
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"input size {text!r} is not a size: give the side in pixels (e.g. 224), the height and width "
                         "(e.g. 150,200), or a volume model's depth, height and width (e.g. 16,64,64)") from None
    return check_input_size(sides[0] if len(sides) == 1 else sides)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_whole(value: object) -> bool:
    return _is_number(value) and math.isfinite(value) and float(value).is_integer()  # type: ignore[arg-type]


def _refused(value: object) -> ValueError:
    shown = value if _is_number(value) else tuple(value) if isinstance(value, Sequence) else repr(value)
    if isinstance(shown, tuple) and len(shown) == 3:
        return ValueError(f"input size {shown} is not a volume size: give the depth, height and width in voxels the "
                          f"model takes, whole numbers from 1 with at most {MAX_VOXELS:,} voxels in all "
                          "(e.g. [16, 64, 64])")
    return ValueError(
        f"input size {shown} is not an image size: give the side in pixels the model takes, a whole number from 1 "
        f"to {MAX_INPUT_SIDE:,} (e.g. 224), or a height and width of at most {DEFAULT_MAX_PIXELS:,} pixels in all"
    )


def read_side(size: Sequence[int] | None) -> int | None:
    """The side images are read at for a model whose input size is ``size``: its in-plane side
    when height equals width, whether ``size`` is an image's (H, W) or a volume's (D, H, W)
    (volumes are resized in-plane when read; their depth is the model's to resample), else None
    (the reader's default or each image's own size).

    >>> read_side((224, 224)), read_side((8, 32, 32)), read_side((150, 200)), read_side(None)
    (224, 32, None, None)
    """
    if not size or len(size) < 2 or size[-1] != size[-2]:
        return None
    return int(size[-1])
