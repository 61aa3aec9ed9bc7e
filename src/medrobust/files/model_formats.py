"""What kind of model file a path holds, judged from its bytes without loading it (and without
importing torch, so the service's web process can check an upload).

``is_torchscript``: ``torch.jit.save`` writes a zip archive with ``<root>/code/...`` and
``<root>/constants.pkl``; ``torch.save`` writes ``<root>/data.pkl`` without them. Nothing is
unpickled to decide.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

ONNX_FIRST_BYTE = 0x08
"""An ONNX file is a ``ModelProto`` protobuf whose first field is ``ir_version`` (field 1,
varint): its first byte is the tag ``0x08``."""


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive, judged from its zip member names only.

    ``torch.jit.save`` writes ``<root>/code/...`` and ``<root>/constants.pkl``; ``torch.save``
    writes ``<root>/data.pkl`` without them. Nothing is unpickled to decide.
    """
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                parts = name.split("/")
                if (len(parts) >= 3 and parts[1] == "code") or (len(parts) == 2 and parts[1] == "constants.pkl"):
                    return True
    except (zipfile.BadZipFile, OSError):
        return False
    return False


def is_torch_pickle(path: str | Path) -> bool:
    """Whether ``path`` is a ``torch.save`` zip archive (``<root>/data.pkl``) that is not
    TorchScript: loading it unpickles, which can run any code."""
    if not zipfile.is_zipfile(path) or is_torchscript(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/")[-1] == "data.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def looks_like_onnx(path: str | Path) -> bool:
    """Whether ``path`` starts like an ONNX protobuf (and is not a zip archive)."""
    with open(path, "rb") as handle:
        head = handle.read(1)
    return head == bytes([ONNX_FIRST_BYTE]) and not zipfile.is_zipfile(path)
