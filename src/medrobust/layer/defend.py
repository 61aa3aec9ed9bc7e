"""``mr.defend``: a preprocessing defense applied to images (tensors in, tensors out), or to
a folder of images written as PNGs at the same relative paths under an output folder."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medrobust.execution.progress import Progress, SilentProgress
from medrobust.layer.images import open_images
from medrobust.layer.outputs import OutputNames, write_images


@dataclass
class Defended:
    """A defense applied to images read from files, folders or a dataset.

    Args:
        defense: the full spec, every parameter written out.
        ids: one per image defended, in order.
        device: where the defense ran.
        seconds: its wall time.
        images: the defended images when kept in memory and all of one size; None (the default)
            when they were written, or differ in size.
        files: the paths written, relative to the output folder; None (the default) when kept
            in memory.
        skipped: unreadable files, one line each. Default: empty.

    Shape:
        - images: (N, C, H, W) float32 in [0, 1].
    """

    defense: str
    ids: list[str]
    device: str
    seconds: float
    images: torch.Tensor | None = None
    files: list[str] | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Images defended per second of :attr:`seconds`."""
        return len(self.ids) / max(self.seconds, 1e-9)


def defend(images: Any, defense: Any = "jpeg+tv", *, out: str | Path | None = None, seed: int | None = None,
           device: str = "auto", batch_size: int = 32, progress: Progress | None = None) -> Defended | torch.Tensor:
    """Apply ``defense`` to ``images``: a tensor comes back as the defended tensor; anything else
    gives a :class:`Defended`.

    Images read from files are defended as read (not first rounded to the 8-bit grid).

    Args:
        images: a tensor (B, C, H, W) in [0, 1], or a folder, files or a dataset (see
            :func:`mr.open_images`; folders are read as plain images).
        defense: a spec such as ``"jpeg+tv"`` (the default), ``"jpeg:quality=50+tv:weight=0.1"``
            or ``"tvm"``, or a Defense.
        out: a folder to write each defended image to, as an 8-bit PNG at its path relative to
            the source folder (never the source folder itself; files already under ``out`` are
            not defended again). Default None: kept in memory.
        seed: fixes a randomised defense's draws (TVM). Default None: the defense's own.
        device: where the defense runs (``auto``, the default: CUDA when present).
        batch_size: images per batch. Default 32.
        progress: reports the stage ``defend (NAME)`` (files only). Default None: silent.

    Returns:
        The defended tensor, on the CPU, for a tensor; else a :class:`Defended`.

    Shape:
        - Tensor in: (B, C, H, W) float in [0, 1].
        - Tensor out: (B, C, H, W), in [0, 1].

    Raises:
        ValueError: a bad spec, or ``out`` is the input folder.

    >>> import torch, medrobust as mr
    >>> x = torch.rand(2, 1, 32, 32)
    >>> y = mr.defend(x, "jpeg+tv")
    >>> tuple(y.shape), bool(y.min() >= 0 and y.max() <= 1)
    ((2, 1, 32, 32), True)
    """
    from medrobust.defenses.registry import build_defense
    from medrobust.models.device import resolve_device

    built = build_defense(defense)
    if seed is not None:
        built.manual_seed(seed)
    torch_device = resolve_device(device)
    if isinstance(images, torch.Tensor):
        with torch.no_grad():
            return torch.cat([built(images[i:i + batch_size].to(torch_device)).cpu()
                              for i in range(0, len(images), batch_size)]) if len(images) else images.clone()
    if out is not None:
        source_root = Path(images).resolve() if isinstance(images, (str, Path)) else None
        if source_root is not None and Path(out).resolve() == source_root:
            raise ValueError(f"--out {out} is the input folder; choose another folder so the originals are kept")
    data = open_images(images, labelled=False if isinstance(images, (str, Path, list)) else None, quantise=False)
    if out is not None and data.dataset is not None:  # an output folder inside the input: never defend its files
        out_root = Path(out).resolve()
        data.dataset.records = [r for r in data.dataset.records
                                if r.path is None or not r.path.resolve().is_relative_to(out_root)]
    names = OutputNames(Path(out)) if out is not None else None
    sources = data.paths() if out is not None else None  # CT volumes are written back as they were stored
    ids: list[str] = []
    files: list[str] = []
    kept: list[torch.Tensor] = []
    start = time.perf_counter()
    with (progress or SilentProgress()).stage(f"defend ({built.name})", len(data)) as bar:
        for x, _, batch_ids in data.batches(batch_size):
            with torch.no_grad():
                y = built(x.to(torch_device)).cpu()
            if names is not None:
                files += write_images(names, batch_ids, y, sources)
            else:
                kept.append(y)
            ids += batch_ids
            bar.advance(len(batch_ids))
    return Defended(defense=built.spec(), ids=ids, device=str(torch_device), seconds=time.perf_counter() - start,
                    images=torch.cat(kept) if kept and len({k.shape[1:] for k in kept}) == 1 else None,
                    files=files if names is not None else None, skipped=data.skipped)
