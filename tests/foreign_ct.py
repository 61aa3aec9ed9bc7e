"""A user's own CT material, as it arrives from outside medrobust (issue 29, "tried as a new user
would"): head-CT volumes stored as DICOM series under class folders named the user's way (``bleed``,
``clear``, ``stroke``), each series in a folder of a random name, its slices under shuffled names
without a suffix (as a PACS export writes them); and a tiny 3-D CNN in plain PyTorch, exported to
ONNX (opset 17, dynamic batch axis) and to TorchScript, that takes volumes (B, 1, D, H, W) already
windowed to [0, 1] (the medrobust contract's ``--window`` applies the window)."""

from __future__ import annotations

import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

USER_CLASSES = {"haemorrhage": "bleed", "normal": "clear", "infarct": "stroke"}
"""medrobust's phantom classes -> the user's folder names."""
CLASSES = "bleed,clear,stroke"
"""The user's model's classes, in its output order."""


def write_user_series_tree(out: Path, per_class: int, size: int, depth: int, seed: int) -> Path:
    """``out/<bleed|clear|stroke>/S<random>/<random hex>``: the phantoms' DICOM series renamed."""
    from medrobust.data.phantom.ct_export import write_ct_phantom_dataset

    generated = out.with_name(out.name + "-generated")
    write_ct_phantom_dataset(generated, per_class=per_class, size=size, depth=depth, fmt="dicom", seed=seed)
    rng = random.Random(seed)
    for ours, theirs in USER_CLASSES.items():
        for series in sorted(p for p in (generated / ours).iterdir() if p.is_dir()):
            folder = out / theirs / f"S{rng.randrange(16**6):06X}"
            folder.mkdir(parents=True)
            slices = sorted(series.iterdir())
            rng.shuffle(slices)
            for path in slices:
                shutil.copy(path, folder / f"{rng.randrange(16**10):010x}")
    shutil.rmtree(generated)
    return out


class TinyVolumeNet(nn.Module):
    """One 3-D convolution, a global mean and a linear head: (B, 1, D, H, W) in [0, 1] -> 3 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))


@dataclass(frozen=True)
class UserVolumeModel:
    onnx: Path
    torchscript: Path
    network: nn.Module


def export_user_volume_model(folder: Path, shape: tuple[int, int, int], seed: int = 0) -> UserVolumeModel:
    """``folder/vol.onnx`` and ``folder/vol.pt`` of one TinyVolumeNet taking volumes of ``shape``."""
    torch.manual_seed(seed)
    net = TinyVolumeNet().eval()
    example = torch.rand(2, 1, *shape)
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(net, example, str(folder / "vol.onnx"), opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
        torch.jit.save(torch.jit.trace(net, example), str(folder / "vol.pt"))
    return UserVolumeModel(folder / "vol.onnx", folder / "vol.pt", net)
