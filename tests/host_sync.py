"""Catch host round trips on a machine without a GPU: CPU tensors that stand in for device tensors.

On a CUDA device, reading a tensor's values on the host (``item``, ``tolist``, ``bool(t)``,
``.cpu()``), asking for an output whose size depends on the data (``nonzero``, a boolean-mask
index, ``repeat_interleave`` without ``output_size``) or indexing with a Python list (a
host-to-device copy) blocks the Python thread until the device has finished everything queued
so far. ``torch.cuda.set_sync_debug_mode`` reports these, but only on a GPU. Here a
:class:`DeviceResident` tensor plays the device tensor on the CPU: every value computed from one
is one too (``__torch_function__`` keeps the subclass), and each such read of one is recorded
with the line of medrobust's code that made it. Host bookkeeping (plain tensors) is free to read,
as it would be on a real machine.

Usage::

    with host_reads() as reads:
        attack.perturb(model, on_device(x), on_device(y), generator)
    assert reads == []          # each entry: "what (file:line)"

Limits: tensors made by factories (``torch.zeros(..., device=...)``) without a device-resident
argument are plain here; list indices are recorded on any tensor.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

_PACKAGE = str(Path(__file__).resolve().parents[1] / "src" / "medrobust")
_VALUE_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "__complex__")
_DATA_SIZED = ("nonzero", "argwhere", "unique", "unique_consecutive", "masked_select")
_INDEXING = ("__getitem__", "__setitem__", "index_put", "index_put_")
_active: list[list[str]] = []


def _where() -> str:
    """The innermost line of medrobust's code on the stack."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(_PACKAGE):
            return f"{Path(name).name}:{frame.f_lineno}"
        frame = frame.f_back
    return "outside medrobust"


def _resident(value: object) -> bool:
    if isinstance(value, DeviceResident):
        return True
    return isinstance(value, (tuple, list)) and any(_resident(v) for v in value)


def _bool_index(index: object) -> bool:
    parts = index if isinstance(index, (tuple, list)) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


def _record(what: str) -> None:
    if _active:
        _active[-1].append(f"{what} ({_where()})")


class DeviceResident(torch.Tensor):
    """A CPU tensor standing in for a device tensor (see the module docstring)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", repr(func))
        if name in _VALUE_READS and _resident(args[:1]):
            _record(f"{name} of a device tensor")
        elif name in _DATA_SIZED and _resident(args[:1]):
            _record(f"{name} (data-dependent size)")
        elif name in _INDEXING and len(args) > 1 and _bool_index(args[1]) and _resident(args[:2]):
            _record(f"boolean-mask {name}")
        elif name == "repeat_interleave" and kwargs.get("output_size") is None:
            repeats = args[1] if len(args) > 1 else kwargs.get("repeats", args[0] if args else None)
            if _resident((repeats,)):
                _record("repeat_interleave without output_size")
        out = super().__torch_function__(func, types, args, kwargs)
        return out.as_subclass(torch.Tensor) if name == "cpu" and isinstance(out, torch.Tensor) else out


def on_device(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a :class:`DeviceResident` tensor (shares its storage; autograd works as usual)."""
    return t.as_subclass(DeviceResident)


def on_host(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor again (to inspect a result after the guarded block)."""
    return t.as_subclass(torch.Tensor)


@contextmanager
def host_reads() -> Iterator[list[str]]:
    """Record the host reads of :class:`DeviceResident` tensors, and every Python-list index (a
    host-to-device copy on a GPU), made inside the block."""
    reads: list[str] = []
    get, set_ = torch.Tensor.__getitem__, torch.Tensor.__setitem__

    @functools.wraps(get)
    def list_get(self, index):
        if isinstance(index, list) or (isinstance(index, tuple) and any(isinstance(p, list) for p in index)):
            _record("Python-list index (copied to the device)")
        return get(self, index)

    @functools.wraps(set_)
    def list_set(self, index, value):
        if isinstance(index, list) or (isinstance(index, tuple) and any(isinstance(p, list) for p in index)):
            _record("Python-list index (copied to the device)")
        return set_(self, index, value)

    _active.append(reads)
    torch.Tensor.__getitem__, torch.Tensor.__setitem__ = list_get, list_set  # type: ignore[method-assign]
    try:
        yield reads
    finally:
        torch.Tensor.__getitem__, torch.Tensor.__setitem__ = get, set_  # type: ignore[method-assign]
        _active.pop()


def cuda_syncs(fn):
    """``fn()`` with CUDA's synchronisation warnings on (a real GPU): ``(result, how many times it
    made the host wait for the device)``."""
    import warnings

    torch.cuda.synchronize()
    before = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = fn()
        finally:
            torch.cuda.set_sync_debug_mode(before)
    return result, sum("synchroniz" in str(w.message) for w in caught)
