"""One dataset interface for every image source.

Every source (synthetic phantoms, class-per-folder trees, NIH ChestX-ray14, MedMNIST, DICOM)
is an :class:`ImageDataset`: a ``torch.utils.data.Dataset`` whose items are
``(image, label, id)`` with ``image`` a float32 tensor of shape (1, H, W) in [0, 1].

Bad files: ``dataset[i]`` raises :class:`~medrobust.data.errors.ImageReadError`;
:meth:`ImageDataset.batches` and :meth:`ImageDataset.load` catch it, log it, record it in
``dataset.skipped`` and go on with the rest, so one corrupt file never loses a run.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from medrobust.data.errors import ImageReadError, SkippedFile
from medrobust.data.resize import resize_image
from medrobust.data.stored_grid import EIGHT_BIT, StoredGrid
from medrobust.logs.per_image_log import per_image_log

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor, list[str]]


@dataclass(frozen=True)
class ImageRecord:
    """Where one image lives and what it is.

    Args:
        label: the class index into the dataset's ``classes``.
        id: the image's name, stable across runs (a path relative to the data root, an NIH
            ``Image Index``, ``phantom-000123``).
        path: the file. Default None (in-memory sources).
        split: ``"train"``, ``"val"``, ``"test"`` or None (not assigned). Default None.
        patient: groups images of one person, so splits can keep a patient on one side.
            Default None.
    """

    label: int
    id: str
    path: Path | None = None
    split: str | None = None
    patient: str | None = None


class ImageDataset(torch.utils.data.Dataset):
    """Base class: subclasses implement :meth:`read` (one image as an HxW float array in [0, 1]).

    Args:
        records: one :class:`ImageRecord` per image, labels within ``classes``.
        classes: the class names, in label order.
        size: the side (an int: square) or ``(H, W)`` every image is resized to, with
            anti-aliasing. Default None: each image keeps its own size (then :meth:`batches`
            needs equal sizes).

    Shape:
        - ``dataset[i]``: ``(image, label, id)`` with ``image`` a (1, H, W) float32 tensor in
          [0, 1], ``label`` an int, ``id`` a str.
        - :meth:`batches`, :meth:`load`: images (B, 1, H, W) float32, labels (B,) int64, B ids.

    Raises:
        ValueError: a record's label is outside ``classes``.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        size: int | tuple[int, int] | None = None,
    ) -> None:
        self.records = list(records)
        self.classes = list(classes)
        self.size = size
        self.skipped: list[SkippedFile] = []
        self.grid: StoredGrid = EIGHT_BIT
        """What the images' files store (:mod:`~medrobust.data.stored_grid`): 8-bit grey levels, or
        CT HU for DICOM series, NIfTI volumes and CT slices; a run rounds adversarial images to it."""
        for r in self.records:
            if not 0 <= r.label < len(self.classes):
                raise ValueError(f"{r.id}: label {r.label} is outside the {len(self.classes)} classes {self.classes}")

    @abstractmethod
    def read(self, index: int) -> np.ndarray:
        """Return image ``index`` as a float32 array (H, W) in [0, 1]; raise ImageReadError if unreadable."""

    def __len__(self) -> int:
        return len(self.records)

    def known_noise_std(self) -> float | None:
        """The images' noise standard deviation in the grid's unit when the source knows it (a
        generator that measured it, :class:`~medrobust.data.phantom.ct_dataset.CTPhantomDataset`),
        else None (a run then reads a manifest or estimates it, :mod:`medrobust.data.noise_estimate`)."""
        return None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        """Image ``index``, resized to ``size`` when set.

        Args:
            index: 0 to ``len(self) - 1``.

        Returns:
            ``(image, label, id)``: a (1, H, W) float32 tensor in [0, 1], the class index, the id.

        Raises:
            ImageReadError: the file cannot be read (:meth:`batches` and :meth:`load` skip it).
        """
        record = self.records[index]
        image = self.read(index)
        if self.size is not None and image.ndim == 3:  # a volume: each slice resized in-plane
            image = np.stack([resize_image(s, self.size) for s in image])
        elif self.size is not None:
            image = resize_image(image, self.size)
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).unsqueeze(0)
        return tensor, record.label, record.id

    @property
    def labels(self) -> np.ndarray:
        """Integer labels of all records (including any that later turn out unreadable)."""
        return np.array([r.label for r in self.records], dtype=np.int64)

    def class_counts(self) -> dict[str, int]:
        """Records per class, ``{class name: count}`` in class order (unreadable files included)."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts)}

    def subset(self, split: str) -> "ImageDataset":
        """A view of the records whose ``split`` equals ``split`` (shares the reader)."""
        indices = [i for i, r in enumerate(self.records) if r.split == split]
        return _Subset(self, indices)

    def all_in_split(self, split: str) -> "ImageDataset":
        """A view in which every record belongs to ``split`` (``"test"``: evaluate a trained
        model on all of its images); shares the reader, reports skips to itself."""
        view = _Subset(self, range(len(self)))
        view.records = [replace(r, split=split) for r in view.records]
        return view

    def splits(self) -> dict[str, "ImageDataset"]:
        """``{"train": ..., "val": ..., "test": ...}`` for the splits present in the records."""
        names = [s for s in ("train", "val", "test") if any(r.split == s for r in self.records)]
        return {s: self.subset(s) for s in names}

    def _skip(self, index: int, err: ImageReadError) -> None:
        """Log and record an unreadable file once, however often the dataset is iterated."""
        if any(s.path == err.path for s in self.skipped):
            return
        per_image_log.warning("skipping %s", err)
        self.skipped.append(SkippedFile(path=err.path, reason=err.problem))

    def iter_valid(self) -> Iterator[tuple[torch.Tensor, int, str]]:
        """Yield every readable item; unreadable ones are logged and recorded in ``skipped``."""
        for i in range(len(self)):
            try:
                item = self[i]
            except ImageReadError as err:
                self._skip(i, err)
                continue
            yield item

    def read_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, list[str], list[int]]:
        """The readable items among ``indices``.

        Unreadable ones are logged and recorded in ``skipped`` (as :meth:`iter_valid` does).

        Args:
            indices: positions in this dataset.

        Returns:
            ``(images, labels, ids, kept)``: images (B, 1, H, W) float32 in [0, 1], labels (B,)
            int64, the B ids and the B indices read; with none readable, B = 0 (images of shape
            (0, 1, 0, 0)).

        Raises:
            ValueError: two readable images differ in shape (give the dataset a ``size``).
        """
        images: list[torch.Tensor] = []
        labels: list[int] = []
        ids: list[str] = []
        kept: list[int] = []
        for i in indices:
            try:
                image, label, item_id = self[i]
            except ImageReadError as err:
                self._skip(i, err)
                continue
            if images:
                _check_same_shape(image, images[0], item_id)
            images.append(image)
            labels.append(label)
            ids.append(item_id)
            kept.append(int(i))
        x = torch.stack(images) if images else torch.zeros((0, 1, 0, 0))
        return x, torch.tensor(labels, dtype=torch.long), ids, kept

    def batches(self, batch_size: int = 32) -> Iterator[Batch]:
        """Batches of the readable items, in order; unreadable files are skipped and recorded.

        Args:
            batch_size: images per batch, at least 1 (the last batch may be smaller). Default 32.

        Yields:
            ``(images, labels, ids)``: images (B, 1, H, W) float32 in [0, 1], labels (B,) int64,
            B ids.

        Raises:
            ValueError: ``batch_size`` below 1, or images of different shapes (give a ``size``).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        images: list[torch.Tensor] = []
        labels: list[int] = []
        ids: list[str] = []
        for image, label, item_id in self.iter_valid():
            if images:
                _check_same_shape(image, images[0], item_id)
            images.append(image)
            labels.append(label)
            ids.append(item_id)
            if len(images) == batch_size:
                yield torch.stack(images), torch.tensor(labels, dtype=torch.long), ids
                images, labels, ids = [], [], []
        if images:
            yield torch.stack(images), torch.tensor(labels, dtype=torch.long), ids

    def load(self, batch_size: int = 64) -> Batch:
        """All readable images at once; unreadable files are skipped and recorded.

        Args:
            batch_size: images read per batch on the way. Default 64.

        Returns:
            ``(images, labels, ids)``: images (N, 1, H, W) float32 in [0, 1], labels (N,) int64,
            N ids.

        Raises:
            ValueError: no image is readable.
        """
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        ids: list[str] = []
        for x, y, i in self.batches(batch_size):
            xs.append(x)
            ys.append(y)
            ids.extend(i)
        if not xs:
            raise ValueError(f"no readable images among {len(self)} records ({len(self.skipped)} skipped)")
        return torch.cat(xs), torch.cat(ys), ids

    def skipped_summary(self) -> str:
        """One line per skipped file, or an empty string when nothing was skipped."""
        if not self.skipped:
            return ""
        lines = [f"{len(self.skipped)} file(s) skipped:"]
        lines += [f"  {s}" for s in self.skipped]
        return "\n".join(lines)


def _check_same_shape(image: torch.Tensor, first: torch.Tensor, item_id: str) -> None:
    """Images stacked into one batch must share a shape; the error names the image and the fix."""
    if image.shape != first.shape:
        raise ValueError(f"{item_id}: image shape {tuple(image.shape)} differs from {tuple(first.shape)}; "
                         "give the dataset a size so every image is resized to it")


class _Subset(ImageDataset):
    """A subset of another dataset's records; reads through the parent, reports skips to itself."""

    def __init__(self, parent: ImageDataset, indices: Sequence[int]) -> None:
        super().__init__([parent.records[i] for i in indices], parent.classes, parent.size)
        self.grid = parent.grid
        self.parent = parent
        self.indices = list(indices)

    def read(self, index: int) -> np.ndarray:
        return self.parent.read(self.indices[index])

    def known_noise_std(self) -> float | None:
        return self.parent.known_noise_std()


class ArrayImageDataset(ImageDataset):
    """Images already in memory: an array (N, H, W) of uint8 (0..255), uint16 (0..65535) or float
    (clipped to [0, 1]); or volumes (N, D, H, W) alike (MedMNIST 3D), whose items are (1, D, H, W).

    Args:
        images: the (N, H, W) or (N, D, H, W) array, one image or volume per record.
        records: N :class:`ImageRecord` objects (``path`` None).
        classes: the class names, in label order.
        size: as :class:`ImageDataset`. Default None.

    Shape:
        - images: (N, H, W), uint8, uint16 or float.
        - ``dataset[i]``: image (1, H, W) float32 in [0, 1] (resized when ``size`` is set).

    Raises:
        ValueError: ``images`` is neither 3-D nor 4-D, its length differs from the records', or
            volumes are given with a ``size`` (resizing is in-plane, for images).

    Example:

    >>> import numpy as np
    >>> images = np.zeros((2, 8, 8), dtype=np.uint8)
    >>> records = [ImageRecord(label=0, id="a"), ImageRecord(label=1, id="b")]
    >>> dataset = ArrayImageDataset(images, records, ["Normal", "Pneumonia"], size=16)
    >>> image, label, name = dataset[1]
    >>> image.shape, image.dtype, label, name
    (torch.Size([1, 16, 16]), torch.float32, 1, 'b')
    """

    def __init__(
        self,
        images: np.ndarray,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        size: int | tuple[int, int] | None = None,
    ) -> None:
        if images.ndim not in (3, 4):
            raise ValueError(f"expected images of shape (N, H, W) or volumes (N, D, H, W), got {images.shape}")
        if images.ndim == 4 and size is not None:
            raise ValueError(f"volumes of shape {images.shape[1:]} cannot be resized to {size}: resizing is for 2-D "
                             "images; leave size out")
        if len(images) != len(records):
            raise ValueError(f"{len(images)} images but {len(records)} records")
        super().__init__(records, classes, size)
        self.images = images

    def read(self, index: int) -> np.ndarray:
        image = self.images[index]
        if image.dtype == np.uint8:
            return image.astype(np.float32) / 255.0
        if image.dtype == np.uint16:
            return image.astype(np.float32) / 65535.0
        return np.clip(image.astype(np.float32), 0.0, 1.0)


class FileImageDataset(ImageDataset):
    """Images read from files (PNG, JPEG, DICOM...) through :func:`medrobust.data.io.read_image`.

    Args:
        records: one :class:`ImageRecord` per file, each with a ``path``.
        classes: the class names, in label order.
        size: as :class:`ImageDataset`. Default None.
        max_pixels: the largest width x height read (checked from the header before decoding).
            Default None: :data:`medrobust.data.decoded_pixels.DEFAULT_MAX_PIXELS`.

    Shape:
        - ``dataset[i]``: image (1, H, W) float32 in [0, 1], colour files reduced to grey
          (resized when ``size`` is set).

    Raises:
        ValueError: a record has no path.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        classes: Sequence[str],
        size: int | tuple[int, int] | None = None,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__(records, classes, size)
        for r in self.records:
            if r.path is None:
                raise ValueError(f"{r.id}: FileImageDataset records need a path")
        self.max_pixels = max_pixels

    def read(self, index: int) -> np.ndarray:
        from medrobust.data.io import read_image
        from medrobust.data.volume_entries import is_volume_entry, read_volume

        path = self.records[index].path
        assert path is not None
        if is_volume_entry(path):
            return read_volume(path)
        return read_image(path, max_pixels=self.max_pixels)
