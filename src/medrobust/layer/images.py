"""``mr.open_images``: every kind of image source as one :class:`Images` collection.

A source is a data source string (``phantom``, a class-per-folder ``DIR``, ``nih:CSV,DIR``,
``medmnist:FILE.npz``), a folder or files without classes, a list of those, an
:class:`~medrobust.data.dataset.ImageDataset`, or tensors ``(x, y)`` with ``x`` float images in
[0, 1] of shape (N, C, H, W) and ``y`` (N,) labels (or None: unlabelled).

Record ids are paths relative to the folder for folders (``Normal/x.png``), so a folder of
originals and a folder of attacked or defended copies written by medrobust share ids and pair.
Images are rounded to the 8-bit grid as they are read (what a PNG stores; the runner does the
same), so an image scored in memory and the file written from it give the same answer.
Unreadable files are skipped and listed in :attr:`Images.skipped`, never ending a run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrobust.data.dataset import ImageDataset
from medrobust.data.stored_grid import CT_HU, EIGHT_BIT, StoredGrid

Batch = tuple[torch.Tensor, "torch.Tensor | None", list[str]]

_SOURCE_PREFIXES = ("phantom", "nih:", "medmnist:")


class Images:
    """Images, their labels (when known) and ids, read batch by batch.

    Built by :func:`open_images`; give either ``dataset`` or ``tensors``.

    Args:
        dataset: an :class:`~medrobust.data.dataset.ImageDataset` read on demand. Default None.
        tensors: ``(x, y)``: images (N, C, H, W) in [0, 1] and labels (N,), or None for
            unlabelled images. Default None.
        ids: one id per image of ``tensors``. Default None: ``image-000000``, ``image-000001``...
        classes: the data's class names; None (the default) for unlabelled images.
        source: what was opened, for messages. Default ``""``.
        root: the folder the ids are relative to, when there is one. Default None.
        quantise: round images to their stored grid as they are read (:attr:`grid`: what a PNG
            or a CT DICOM stores; the runner does the same). Default True.
        grid: the stored grid of ``tensors`` (:data:`~medrobust.data.stored_grid.CT_HU` for CT
            in the currency ``(HU + 1024) / 4095``). Default None: 8-bit. A dataset has its own.

    Shape:
        - :meth:`batches`: images (B, C, H, W) float32 in [0, 1], labels (B,) int64 or None,
          B ids.
        - :meth:`load`: images (N, C, H, W), labels (N,) or None, N ids.

    Raises:
        ValueError: both or neither of ``dataset`` and ``tensors``, or a number of ``ids`` other
            than the images'.
    """

    def __init__(self, dataset: ImageDataset | None = None, *, tensors: tuple[torch.Tensor, torch.Tensor | None] | None
                 = None, ids: Sequence[str] | None = None, classes: Sequence[str] | None = None, source: str = "",
                 root: Path | None = None, quantise: bool = True, grid: StoredGrid | None = None) -> None:
        if (dataset is None) == (tensors is None):
            raise ValueError("Images holds a dataset or tensors, not both")
        if grid is not None and dataset is not None:
            raise ValueError("Images: a dataset has its own stored grid; grid= is for tensors")
        self._grid = grid
        self.dataset = dataset
        self.tensors = tensors
        self.classes = list(classes) if classes is not None else None
        self.source = source
        self.root = root
        self.quantise = quantise
        if tensors is not None:
            n = len(tensors[0])
            self._ids = list(ids) if ids is not None else [f"image-{i:06d}" for i in range(n)]
            if len(self._ids) != n:
                raise ValueError(f"{len(self._ids)} ids for {n} images")

    @property
    def labelled(self) -> bool:
        return self.classes is not None

    def __len__(self) -> int:
        return len(self.dataset) if self.dataset is not None else len(self.tensors[0])  # type: ignore[index]

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.dataset.records] if self.dataset is not None else list(self._ids)

    @property
    def skipped(self) -> list[str]:
        """One line per file that could not be read (path: problem; fix)."""
        if self.dataset is None:
            return []
        lines = [str(s) for s in self.dataset.skipped]
        parent = getattr(self.dataset, "parent", None)
        if parent is not None:
            lines = [str(s) for s in parent.skipped] + lines
        return list(dict.fromkeys(lines))

    def paths(self) -> dict[str, Path]:
        """The file behind each id (empty for in-memory images)."""
        if self.dataset is None:
            return {}
        return {r.id: r.path for r in self.dataset.records if r.path is not None}

    def split(self, name: str | None) -> "Images":
        """Only one split of the images.

        Args:
            name: ``train``, ``val`` or ``test``; None or ``all``: every image.

        Returns:
            The images of that split (``self`` for every image, or for images held as tensors,
            which carry no split).

        Raises:
            ValueError: the data has no such split (naming the splits it has).
        """
        if name in (None, "all") or self.dataset is None:
            return self
        parts = self.dataset.splits()
        if name not in parts:
            raise ValueError(f"{self.source}: no {name!r} split (it has {', '.join(parts) or 'none'}); use --split all")
        return Images(parts[name], classes=self.classes, source=self.source, root=self.root, quantise=self.quantise)

    @property
    def grid(self) -> StoredGrid:
        """The stored grid of the images (:mod:`~medrobust.data.stored_grid`): the dataset's (CT
        HU for series, NIfTI and CT slices), else 8-bit grey levels; tensors' as opened
        (:func:`open_images`'s ``grid``)."""
        if self.dataset is not None:
            return getattr(self.dataset, "grid", EIGHT_BIT)  # type: ignore[no-any-return]
        return self._grid or EIGHT_BIT

    def batches(self, batch_size: int = 32, limit: int | None = None) -> Iterator[Batch]:
        """The readable images in order, batch by batch. Images of different sizes (no fixed size)
        come in separate batches; unreadable files are skipped and listed in :attr:`skipped`.

        Args:
            batch_size: the most images per batch. Default 32.
            limit: the most images in all. Default None: every image.

        Yields:
            ``(images (B, C, H, W) float32 in [0, 1], labels (B,) int64 or None when unlabelled,
            ids)``.

        Raises:
            ValueError: ``batch_size`` below 1 (at the first batch).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        done = 0
        for x, y, ids in self._raw_batches(batch_size):
            if limit is not None:
                if done >= limit:
                    return
                x, ids = x[: limit - done], ids[: limit - done]
                y = y[: limit - done] if y is not None else None
            done += len(ids)
            yield (self.grid.round(x) if self.quantise else x), (y if self.labelled else None), ids

    def _raw_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, list[str]]]:
        if self.tensors is not None:
            x, y = self.tensors
            for start in range(0, len(x), batch_size):
                end = start + batch_size
                yield x[start:end], (y[start:end] if y is not None else None), self._ids[start:end]
            return
        assert self.dataset is not None
        if self.dataset.size is not None:
            yield from self.dataset.batches(batch_size)
            return
        pending: list[tuple[torch.Tensor, int, str]] = []
        for item in self.dataset.iter_valid():  # each image at its own size: a new size starts a new batch
            if pending and (item[0].shape != pending[0][0].shape or len(pending) == batch_size):
                yield _stack(pending)
                pending = []
            pending.append(item)
        if pending:
            yield _stack(pending)

    def load(self, batch_size: int = 64, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
        """Every readable image at once.

        Args:
            batch_size: images read per batch. Default 64.
            limit: the most images. Default None: every image.

        Returns:
            ``(images (N, C, H, W) in [0, 1], labels (N,) or None, ids)``.

        Raises:
            ValueError: the images have different sizes (give a size), or none is readable.
        """
        xs, ys, ids = [], [], []
        for x, y, i in self.batches(batch_size, limit):
            if xs and x.shape[1:] != xs[0].shape[1:]:
                raise ValueError(f"{self.source}: images of different sizes ({tuple(xs[0].shape[2:])} and "
                                 f"{tuple(x.shape[2:])}); give a size so every image is resized to it")
            xs.append(x)
            ys.append(y)
            ids.extend(i)
        if not xs:
            raise ValueError(f"{self.source}: no readable images" + (f" ({len(self.skipped)} skipped: "
                                                                      f"{self.skipped[0]})" if self.skipped else ""))
        return torch.cat(xs), (torch.cat(ys) if ys[0] is not None else None), ids

    def split_summary(self) -> str:
        """Images per class and split, as a small text table."""
        if self.dataset is None:
            return f"{len(self)} images in memory"
        from medrobust.data.splits import dataset_split_summary

        return dataset_split_summary(self.dataset)

    def check(self, advance=None) -> list[str]:
        """Read every image once; the skipped files (also in :attr:`skipped`)."""
        if self.dataset is not None:
            for _ in self.dataset.iter_valid():
                if advance is not None:
                    advance(1)
        return self.skipped


def _stack(items: list[tuple[torch.Tensor, int, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    return (torch.stack([t for t, _, _ in items]), torch.tensor([label for _, label, _ in items], dtype=torch.long),
            [i for _, _, i in items])


def open_images(source: Any, *, labels: Any = None, classes: Sequence[str] | None = None, labelled: bool | None = None,
                size: int | None = None, split: str | None = None, fractions: Sequence[float] | None = None,
                split_seed: int = 42, per_class: int = 300, seed: int = 0, ids: Sequence[str] | None = None,
                quantise: bool = True, grid: str | StoredGrid | None = None) -> Images:
    """Open ``source`` (see the module docstring) as :class:`Images`.

    Args:
        source: a data source string (``phantom``, a class-per-folder ``DIR``, ``nih:CSV,DIR``,
            ``medmnist:FILE.npz``), a folder or file without classes, a list of files or folders,
            an :class:`~medrobust.data.dataset.ImageDataset`, an :class:`Images` (returned, split
            as asked), or tensors: ``x`` or ``(x, y)``.
        labels: the labels of tensors given as ``x`` alone: (N,) class indices into ``classes``.
            Default None: unlabelled.
        classes: the data's class names: required with labels for tensors; for a folder, which
            class folders to read. Default None.
        labelled: None (the default) decides from the source (a folder is labelled when its
            images sit in class sub-folders, unlabelled when they sit directly in it); False
            reads any folder as plain images.
        size: the side every image is resized to. Default None: each keeps its own.
        split: keep only ``train``, ``val`` or ``test``. Default None: every image.
        fractions: the train/val/test fractions that make the split. Default None: 60/20/20.
        split_seed: the seed of the split. Default 42.
        per_class: the phantoms' images per class. Default 300 (as ``open_dataset``'s).
        seed: the phantoms' generator seed. Default 0.
        ids: one id per image of tensors. Default None: ``image-000000``...
        quantise: round the images to their stored grid as they are read. Default True.
        grid: for tensors, the grid they are stored on: ``"CT"`` (or
            :data:`~medrobust.data.stored_grid.CT_HU`) for CT in the currency
            ``(HU + 1024) / 4095``, whose budgets are stated in HU and which is rounded to integer
            HU; ``"8-bit"``. Default None: 8-bit. Files and datasets carry their own grid.

    Returns:
        The images, read batch by batch as they are asked for (only tensors are held in memory).

    Shape:
        - Tensors in: ``x`` (N, C, H, W) float in [0, 1], ``y`` (N,) int.
        - Batches out: (B, C, H, W) float32 in [0, 1], labels (B,) int64 or None.

    Raises:
        ValueError: tensors outside [0, 1], labels without ``classes`` or outside them, a
            number of labels other than the images', an unknown split, or a data source the
            readers refuse.

    >>> import torch, medrobust as mr
    >>> images = mr.open_images(torch.rand(4, 1, 32, 32), labels=torch.tensor([0, 1, 2, 0]),
    ...                         classes=["Normal", "Pneumonia", "Pneumothorax"])
    >>> len(images), images.labelled
    (4, True)
    >>> x, y, ids = next(images.batches(2))
    >>> tuple(x.shape), y.tolist(), ids
    ((2, 1, 32, 32), [0, 1], ['image-000000', 'image-000001'])
    """
    tensors = isinstance(source, torch.Tensor) or (isinstance(source, tuple) and len(source) > 0
                                                   and isinstance(source[0], torch.Tensor))
    if grid is not None and not tensors:
        raise ValueError(f"mr.open_images: grid={grid!r} is for tensors; files and datasets carry their own grid "
                         "(DICOM and NIfTI are read in HU)")
    if isinstance(source, Images):
        return source.split(split)
    if tensors:
        return _from_tensors(source, labels, classes, ids, quantise, _grid_named(grid)).split(split)
    if isinstance(source, ImageDataset):
        return Images(source, classes=source.classes, source=type(source).__name__, quantise=quantise).split(split)
    if isinstance(source, (list, tuple)):
        return _unlabelled([Path(s) for s in source], size, quantise)
    text = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
    path = Path(text)
    is_spec = text.strip().startswith(_SOURCE_PREFIXES) or text.strip().endswith(".npz")
    if not is_spec and (path.is_file() or labelled is False or (path.is_dir() and not _has_class_folders(path))):
        return _unlabelled([path], size, quantise)
    from medrobust.data.sources import DEFAULT_FRACTIONS, open_dataset

    dataset = open_dataset(text, size=size, fractions=tuple(fractions or DEFAULT_FRACTIONS), split_seed=split_seed,
                           per_class=per_class, seed=seed, classes=classes)
    return Images(dataset, classes=dataset.classes, source=text, root=path if path.is_dir() else None,
                  quantise=quantise).split(split)


def _has_class_folders(root: Path) -> bool:
    """A class-per-folder tree holds its images in sub-folders, none loose at the top."""
    from medrobust.data.io import is_image_file

    entries = [e for e in root.iterdir() if not e.name.startswith(".")]
    return any(e.is_dir() for e in entries) and not any(is_image_file(e) for e in entries)


def _unlabelled(paths: list[Path], size: int | None, quantise: bool) -> Images:
    from medrobust.data.folders import unlabelled_images

    dataset = unlabelled_images(paths, size=size)
    root = paths[0] if len(paths) == 1 and paths[0].is_dir() else None
    return Images(dataset, classes=None, source=", ".join(str(p) for p in paths), root=root, quantise=quantise)


def _grid_named(grid: str | StoredGrid | None) -> StoredGrid | None:
    if grid is None or isinstance(grid, StoredGrid):
        return grid
    grids = {g.name.lower(): g for g in (EIGHT_BIT, CT_HU)} | {CT_HU.unit.lower(): CT_HU}
    try:
        return grids[str(grid).strip().lower()]
    except KeyError:
        raise ValueError(f"mr.open_images: grid {grid!r}: use 'CT' (HU) or '8-bit'") from None


def _from_tensors(source: Any, labels: Any, classes: Sequence[str] | None, ids: Sequence[str] | None,
                  quantise: bool, grid: StoredGrid | None = None) -> Images:
    if isinstance(source, tuple):
        if len(source) != 2 or labels is not None:
            raise ValueError("pass images as (x, y) or as x with labels=y, not both")
        source, labels = source
    x = source
    from medrobust.data.image_batch import check_image_batch

    check_image_batch(x, "mr.open_images")
    if float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise ValueError(f"mr.open_images: images must lie in [0, 1] (got {float(x.min()):.3g}..{float(x.max()):.3g}); "
                         "divide 8-bit images by 255")
    y = None
    if labels is not None:
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(-1)
        if len(y) != len(x):
            raise ValueError(f"mr.open_images: {len(y)} labels for {len(x)} images")
        if classes is None:
            raise ValueError("mr.open_images: labelled tensors need classes=[...] (the class name of each label index)")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise ValueError(f"mr.open_images: labels must be 0..{len(classes) - 1} for classes {list(classes)}")
    return Images(tensors=(x.detach().float().cpu(), y), ids=ids, classes=classes if y is not None else None,
                  source="tensors", quantise=quantise, grid=grid)
