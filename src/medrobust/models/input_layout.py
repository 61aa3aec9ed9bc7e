"""What a model file says about its input, read from the input shape it declares, and checked
against what the user declared (:class:`~medrobust.models.contract.ModelContract`).

A Keras model and an ONNX graph each declare their input's shape, with the dimensions they fix
as numbers and the others left open (None, a symbolic name, -1); the loaders of both formats
read it here, so "(H, W) and channels, in which layout" is read one way and a disagreement with
the declared contract is refused in one sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medrobust.models.contract import ModelContract

InputLayout = tuple[tuple[int, ...] | None, int | None]
"""(H, W) (a volume's (D, H, W)) when the file fixes every side, and channels when it fixes them
(None: left open)."""


def input_layout(shape: Sequence[object], channels_last: bool, path: str | Path, what: str,
                 volumes: bool = False) -> InputLayout:
    """(H, W) and channels from a declared input ``shape`` (B, C, H, W), or (B, H, W, C) when
    ``channels_last``; with ``volumes`` (ONNX) also (D, H, W) from a 5-D (B, C, D, H, W) shape. A
    dimension that is not a positive whole number is left open. Any other rank is refused.
    ``what`` names the file's kind in the message (``"Keras model"``).

    >>> input_layout((None, 1, 32, 32), False, "m.onnx", "ONNX model")
    ((32, 32), 1)
    >>> input_layout((None, None, None, 3), True, "m.keras", "Keras model")
    (None, 3)
    >>> input_layout(("batch", 1, 16, 64, 64), False, "vol.onnx", "ONNX model", volumes=True)
    ((16, 64, 64), 1)
    """
    rank_ok = len(shape) == 4 or (volumes and not channels_last and len(shape) == 5)
    if not rank_ok:
        layout = "(B, H, W, C)" if channels_last else "(B, C, H, W)"
        if volumes and not channels_last:
            layout += " or volumes (B, C, D, H, W)"
        raise ValueError(f"{path}: the {what} takes inputs of shape {tuple(shape)}, not images {layout}; "
                         f"medrobust needs a {'2-D image or 3-D volume' if volumes else '2-D image'} classifier")
    if channels_last:
        sides, c = list(shape[1:3]), shape[3]
    else:
        sides, c = list(shape[2:]), shape[1]
    fixed = [int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None for v in (*sides, c)]
    size = tuple(fixed[:-1]) if all(fixed[:-1]) else None
    return size, fixed[-1]  # type: ignore[return-value]


def declared_layout(contract: ModelContract, found: InputLayout, path: str | Path, what: str,
                    spatial_dims: int = 2) -> InputLayout:
    """The input size and network channels to use: the declared ones, else the file's; a declared
    value the file contradicts is refused (ValueError naming the file and both values), so is a
    declared size of another rank than the file's input (``spatial_dims``: 2 images, 3 volumes)."""
    found_size, found_channels = found
    size = contract.size
    if size is not None and len(size) != spatial_dims:
        takes = "volumes (B, C, D, H, W): give input_size as [depth, height, width]" if spatial_dims == 3 else \
            "images (B, C, H, W): give input_size as a side or [height, width]"
        raise ValueError(f"{path}: input size {size} was given but the {what} takes {takes}")
    if size is not None and found_size is not None and size != found_size:
        raise ValueError(f"{path}: input size {size} was given but the {what} takes {found_size}; "
                         "leave --input-size out or give the model's size")
    if contract.channels is not None and found_channels is not None and contract.channels != found_channels:
        raise ValueError(f"{path}: {contract.channels} network channels were given but the {what} takes "
                         f"{found_channels}; leave --channels out or check --channels-last")
    return size or found_size, contract.channels or found_channels
