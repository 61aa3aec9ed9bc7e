"""``resolve_device``: ``auto`` picks CUDA when present, and a device that is not there fails early."""

from __future__ import annotations

import pytest
import torch

from medrobust.models.device import resolve_device


def test_auto_is_cuda_when_present_else_the_cpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(" AUTO ") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device() == torch.device("cuda")


def test_a_missing_gpu_is_refused_by_name_or_as_a_device(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0", torch.device("cuda", 0)):
        with pytest.raises(ValueError, match="no CUDA device is available"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"only 1 CUDA device\(s\) are visible"):
        resolve_device("cuda:1")


def test_the_cpu_and_bad_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device("gpu")


@pytest.mark.gpu
def test_auto_resolves_to_the_gpu_here() -> None:
    device = resolve_device("auto")
    assert device.type == "cuda" and torch.zeros(1, device=device).device.type == "cuda"


def test_tf32_is_off_unless_opted_in(monkeypatch) -> None:
    import torch

    from medrobust.models.device import set_cuda_precision

    monkeypatch.delenv("MEDROBUST_ALLOW_TF32", raising=False)
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        assert set_cuda_precision() is False
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        monkeypatch.setenv("MEDROBUST_ALLOW_TF32", "1")
        assert set_cuda_precision() is True and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
