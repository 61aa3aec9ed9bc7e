"""Device selection: ``auto`` means CUDA when present, else the CPU.

Precision on CUDA: PyTorch runs convolutions in TF32 by default on Ampere and later GPUs (a
10-bit mantissa), which changes gradients and so adversarial images; medrobust computes in full
float32 there unless the user opts in with ``MEDROBUST_ALLOW_TF32=1`` (faster, results no longer
equal to a float32 run's). Reduced precision is never turned on silently.

Memory format: on the CPU, oneDNN's convolutions, batch norms and pooling run faster on
channels-last (NHWC) activations than on the default NCHW ones; :func:`channels_last_is_faster`
says where medrobust asks for that layout (the attack engine, through
:func:`medrobust.models.classifier.network_memory_format`). The values are the same, only the
order of floating-point sums inside the kernels differs.
"""

from __future__ import annotations

import os

import torch

ALLOW_TF32_VARIABLE = "MEDROBUST_ALLOW_TF32"


def set_cuda_precision() -> bool:
    """Turn TF32 off for cuDNN convolutions and CUDA matmuls unless ``MEDROBUST_ALLOW_TF32=1``;
    returns whether TF32 is allowed."""
    allow = os.environ.get(ALLOW_TF32_VARIABLE, "0").strip().lower() in ("1", "true", "yes")
    torch.backends.cudnn.allow_tf32 = allow
    torch.backends.cuda.matmul.allow_tf32 = allow
    return allow


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; anything else as given (checked).

    A CUDA device (by name or as a ``torch.device``) must exist: ``cuda`` needs a visible GPU and
    ``cuda:N`` one of index N, so a wrong setting fails here, with the fix, and not at the first
    tensor moved there.
    """
    if isinstance(name, str) and name.strip().lower() == "auto":
        if torch.cuda.is_available():
            set_cuda_precision()
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(name.strip() if isinstance(name, str) else name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(name)!r} was asked for but no CUDA device is available; "
                             "use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {str(name)!r} was asked for but only {count} CUDA device(s) are visible "
                             f"(cuda:0 to cuda:{count - 1}); use auto, cuda or an index below {count}")
        set_cuda_precision()
    return device


def channels_last_is_faster(device: torch.device) -> bool:
    """Whether a network runs faster on ``device`` with channels-last activations: on a CPU with
    oneDNN (mkldnn), yes, at 64 and 224 px (``benchmarks/bench_sia.py``; the dated figures are in
    ``benchmarks/README.md``, "Channels-last activations"). On CUDA in full float32 (medrobust's
    default, no TF32) cuDNN's gain from NHWC comes with tensor-core precisions; not measured
    here, so not assumed.

    Args:
        device: where the network runs.

    Returns:
        True on a CPU with oneDNN, else False.
    """
    return device.type == "cpu" and torch.backends.mkldnn.is_available()
